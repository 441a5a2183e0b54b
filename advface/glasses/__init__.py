"""Adversarial eyeglasses (AGN): where frames sit on a face (``geometry``), procedural frames and the AGN
dataset loader (``textures``), the eyeglass DCGAN's training and sampling (``dcgan``), printed frames
and their marks (``physical``), the live camera check (``camera``), the attack as a run-folder job
(``workflow``) and the ``advface glasses`` commands (``commands``). The attack itself is
:class:`advface.attacks.eyeglasses.EyeglassAttack`."""
