"""Attacks on face recognition: goals and results (``base``), one module per family.

Pixel attacks by name (``advface attack NAME``, :func:`make_attack`):

==========  ==========================  ==============  ==============================================
name        class                       norms           kind
==========  ==========================  ==============  ==============================================
fgsm        ``pgd.FGSM``                linf, l2        one gradient step
bim         ``pgd.BIM``                 linf, l2        iterated steps from the clean image
pgd         ``pgd.PGD``                 linf, l2        random start, restarts, best iterate
mifgsm      ``mifgsm.MIFGSM``           linf, l2        momentum, input diversity, TI (transfer)
cw          ``cw.CarliniWagnerL2``      l2              minimal perturbation, search over c
deepfool    ``deepfool.DeepFool``       l2              minimal perturbation, linearised steps
apgd        ``apgd.APGD``               linf, l2        step-size-free PGD (CE or DLR loss)
square      ``square.Square``           linf, l2        score-based black box with a query budget
==========  ==========================  ==============  ==============================================
"""

from __future__ import annotations

import importlib
import inspect

from advface.attacks.base import (
    AttackResult,
    Dodge,
    Impersonate,
    Judgement,
    Misclassify,
    Misidentify,
    TargetClass,
    goal_loss,
    judge,
)
from advface.errors import AdvfaceError

ATTACKS = {
    "fgsm": ("advface.attacks.pgd", "FGSM"),
    "bim": ("advface.attacks.pgd", "BIM"),
    "pgd": ("advface.attacks.pgd", "PGD"),
    "mifgsm": ("advface.attacks.mifgsm", "MIFGSM"),
    "cw": ("advface.attacks.cw", "CarliniWagnerL2"),
    "deepfool": ("advface.attacks.deepfool", "DeepFool"),
    "apgd": ("advface.attacks.apgd", "APGD"),
    "square": ("advface.attacks.square", "Square"),
}


def attack_class(name: str) -> type:
    """The attack class registered as ``name`` (see the module docstring)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ATTACKS:
        raise AdvfaceError(f"Unknown attack. Received: name={name!r}. Known: {', '.join(ATTACKS)}.")
    module, cls = ATTACKS[key]
    return getattr(importlib.import_module(module), cls)


def attack_parameters(name: str) -> list[str]:
    """The keyword-only hyperparameters of attack ``name``."""
    signature = inspect.signature(attack_class(name).__init__)
    return [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def make_attack(name: str, **settings):
    """Build attack ``name`` from keyword settings; ``None`` values mean "the attack's default"."""
    cls = attack_class(name)
    accepted = attack_parameters(name)
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise AdvfaceError(
            f"{cls.name} does not take {', '.join(unknown)}. Received: {', '.join(unknown)}. "
            f"It takes: {', '.join(accepted)}."
        )
    return cls(**given)


__all__ = [
    "ATTACKS",
    "AttackResult",
    "Dodge",
    "Impersonate",
    "Judgement",
    "Misclassify",
    "Misidentify",
    "TargetClass",
    "attack_class",
    "attack_parameters",
    "goal_loss",
    "judge",
    "make_attack",
]
