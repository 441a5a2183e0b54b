"""Attacks on face recognition: goals and results (``base``), one module per family."""

from advface.attacks.base import Dodge, Impersonate, Judgement, Misclassify, TargetClass, goal_loss, judge

__all__ = ["Dodge", "Impersonate", "Judgement", "Misclassify", "TargetClass", "goal_loss", "judge"]
