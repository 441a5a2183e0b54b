"""Semantic robustness: attribute directions in a generator's latent space and attacks along them.

:mod:`advface.semantic.scorers` measures attributes of rendered faces, :mod:`advface.semantic.directions`
holds direction sets (shipped or learned) and fits InterFaceGAN boundaries, and
:mod:`advface.semantic.learn` is the resumable ``advface semantic directions`` workflow.
"""
