"""Goals of attacks on face recognition, and how a model's outputs are judged against them.

A goal says what the attacker wants from the model on each image:

==================  ==============  =============================================================
goal                model kind      success on an image
==================  ==============  =============================================================
``Dodge``           embedding       distance to the nearest reference embedding > threshold
``Impersonate``     embedding       distance to the nearest target embedding <= threshold
``Misclassify``     classifier      the top class is not the true label (dodging)
``TargetClass``     classifier      the top class is the target label (impersonation)
==================  ==============  =============================================================

"Nearest" follows how a verification system with several enrolled photos decides: it accepts a probe
when any enrolled embedding is within the threshold. A single reference embedding (e.g. the mean of the
enrolment photos) is the special case of one row. Classifier goals may ask for confidence as well
(``probability``): the true class's probability at most that (dodging), or the target's at least that
(impersonation), the AGN paper's stopping rule.

:func:`goal_loss` is the differentiable objective attacks minimise and :func:`judge` the decision,
computed from the same model outputs, so what an attack optimises is what is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from advface.errors import AdvfaceError


def _rows(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or not len(a) or not np.isfinite(a).all():
        raise AdvfaceError(f"`{name}` must be finite embeddings of shape (K, D). Received: shape={a.shape}.")
    return a


def _check_probability(p) -> None:
    if p is not None and not 0.0 < p < 1.0:
        raise AdvfaceError(f"`probability` must be in (0, 1). Received: probability={p!r}.")


@dataclass(frozen=True)
class Dodge:
    """Embedding models: be farther than ``threshold`` from every reference embedding of oneself."""

    reference_embeddings: np.ndarray = field(repr=False)
    threshold: float | None = None  # None: the model's verification threshold

    def __post_init__(self):
        object.__setattr__(
            self, "reference_embeddings", _rows(self.reference_embeddings, "reference_embeddings")
        )


@dataclass(frozen=True)
class Impersonate:
    """Embedding models: come within ``threshold`` of a target's embedding."""

    target_embeddings: np.ndarray = field(repr=False)
    threshold: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "target_embeddings", _rows(self.target_embeddings, "target_embeddings"))


@dataclass(frozen=True)
class Misclassify:
    """Classifiers: the top class is not ``label`` (the attacker's own class)."""

    label: int
    probability: float | None = None  # also require p(label) <= probability

    def __post_init__(self):
        _check_probability(self.probability)


@dataclass(frozen=True)
class TargetClass:
    """Classifiers: the top class is ``label`` (the class to impersonate)."""

    label: int
    probability: float | None = None  # also require p(label) >= probability

    def __post_init__(self):
        _check_probability(self.probability)


Goal = Dodge | Impersonate | Misclassify | TargetClass


@dataclass(frozen=True)
class Judgement:
    """How model outputs fare against a goal, per image.

    Attributes:
        success: ``(N,)`` bool.
        score: ``(N,)`` float: the distance to the nearest reference/target (embedding goals) or the
            probability of the goal's class (classifier goals).
        predicted: ``(N,)`` int top class (classifiers), else ``None``.
    """

    success: np.ndarray
    score: np.ndarray
    predicted: np.ndarray | None = None


def check_goal(goal: Goal, model) -> None:
    """Raise a clear error when ``goal`` does not fit ``model`` (a zoo ``FaceModel``)."""
    if isinstance(goal, Dodge | Impersonate):
        if model.kind != "embedding":
            raise AdvfaceError(
                f"{type(goal).__name__} needs an embedding model; {model.name} is a classifier. Use "
                "Misclassify (dodging) or TargetClass (impersonation) with a classifier."
            )
        refs = goal.reference_embeddings if isinstance(goal, Dodge) else goal.target_embeddings
        width = model.keras_model.output_shape[-1]
        if refs.shape[1] != width:
            raise AdvfaceError(
                f"The goal's embeddings have {refs.shape[1]} dimensions but {model.name} gives {width}. "
                "Compute them with the same model."
            )
        if (goal.threshold if goal.threshold is not None else model.threshold) is None:
            raise AdvfaceError(f"{model.name} has no threshold; pass one to the goal.")
    elif isinstance(goal, Misclassify | TargetClass):
        if model.kind != "classifier":
            raise AdvfaceError(
                f"{type(goal).__name__} needs a classifier; {model.name} is an embedding model. Use Dodge "
                "or Impersonate with reference embeddings."
            )
        classes = model.keras_model.output_shape[-1]
        if not 0 <= int(goal.label) < classes:
            raise AdvfaceError(f"Class label out of range 0..{classes - 1}. Received: label={goal.label}.")
    else:
        raise AdvfaceError(
            f"Unknown goal. Received: {goal!r}. Use Dodge, Impersonate, Misclassify or TargetClass."
        )


def goal_threshold(goal: Goal, model) -> float | None:
    if isinstance(goal, Dodge | Impersonate):
        return float(goal.threshold if goal.threshold is not None else model.threshold)
    return None


def nearest_distance(outputs, references, metric: str):
    """Distance from each row of ``outputs`` ``(B, D)`` to its nearest row of ``references`` ``(K, D)``.

    A differentiable TensorFlow computation (euclidean, or cosine = 1 - cos similarity).
    """
    import tensorflow as tf

    refs = tf.constant(references, tf.float32)
    if metric == "euclidean":
        sq = tf.reduce_sum((outputs[:, None, :] - refs[None]) ** 2, axis=-1)
        d = tf.sqrt(tf.maximum(sq, 1e-12))
    elif metric == "cosine":
        a = tf.math.l2_normalize(outputs, axis=-1)
        d = 1.0 - tf.matmul(a, tf.math.l2_normalize(refs, axis=-1), transpose_b=True)
    else:
        raise AdvfaceError(f"Unknown distance. Received: metric={metric!r}. Known: euclidean, cosine.")
    return tf.reduce_min(d, axis=1)


def goal_loss(goal: Goal, model, outputs):
    """Per-image loss ``(B,)`` that an attack minimises to reach ``goal`` (a TensorFlow tensor).

    Embedding goals: minus the distance to the nearest reference (dodging) or the distance to the
    nearest target (impersonation). Classifier goals: the AGN paper's logit objective
    ``z_t - sum_{i != t} z_i`` (dodging, t = own class) and its negative (impersonation, t = target).
    """
    import tensorflow as tf

    if isinstance(goal, Dodge):
        return -nearest_distance(outputs, goal.reference_embeddings, model.spec.distance)
    if isinstance(goal, Impersonate):
        return nearest_distance(outputs, goal.target_embeddings, model.spec.distance)
    t = int(goal.label)
    own = outputs[:, t]
    objective = 2.0 * own - tf.reduce_sum(outputs, axis=1)  # z_t - sum_{i != t} z_i
    return objective if isinstance(goal, Misclassify) else -objective


def judge(goal: Goal, model, outputs) -> Judgement:
    """Decide, per image, whether model ``outputs`` ``(N, D)`` (embeddings or logits) meet ``goal``."""
    out = np.asarray(outputs, np.float64)
    if isinstance(goal, Dodge | Impersonate):
        from advface.verification import pairwise_distances

        d = pairwise_distances(out, _refs(goal), model.spec.distance).min(axis=1)
        thr = goal_threshold(goal, model)
        success = d > thr if isinstance(goal, Dodge) else d <= thr
        return Judgement(success=success, score=d)
    probs = np.exp(out - out.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    t = int(goal.label)
    top = probs.argmax(axis=1)
    p = probs[:, t]
    if isinstance(goal, Misclassify):
        success = top != t
        if goal.probability is not None:
            success &= p <= goal.probability
    else:
        success = top == t
        if goal.probability is not None:
            success &= p >= goal.probability
    return Judgement(success=success, score=p, predicted=top)


def _refs(goal) -> np.ndarray:
    return goal.reference_embeddings if isinstance(goal, Dodge) else goal.target_embeddings
