"""Certified robustness: guarantees that no perturbation within a radius changes a decision.

:mod:`advface.certification.smoothing` holds randomized smoothing (Cohen, Rosenfeld, Kolter, ICML 2019):
:class:`Smooth` certifies a base classifier's smoothed prediction in an L2 ball (isotropic noise, any
input) or in the M-norm ellipsoid of semantic attribute budgets (anisotropic noise).
"""

from __future__ import annotations

from advface.certification.smoothing import (
    ABSTAIN,
    NOISES,
    Certificate,
    Smooth,
    clopper_pearson_lower,
    min_trials,
)

__all__ = ["ABSTAIN", "NOISES", "Certificate", "Smooth", "clopper_pearson_lower", "min_trials"]
