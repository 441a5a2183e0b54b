"""Goals of attacks on face recognition, and how a model's outputs are judged against them.

A goal says what the attacker wants from the model on each image:

==================  ==============  =============================================================
goal                model kind      success on an image
==================  ==============  =============================================================
``Dodge``           embedding       distance to the nearest reference embedding > threshold
``Impersonate``     embedding       distance to the nearest target embedding <= threshold
``Misidentify``     embedding       a 1:N gallery search does not return the person's own identity
``Misclassify``     classifier      the top class is not the true label (dodging)
``TargetClass``     classifier      the top class is the target label (impersonation)
==================  ==============  =============================================================

"Nearest" follows how a verification system with several enrolled photos decides: it accepts a probe
when any enrolled embedding is within the threshold. A single reference embedding (e.g. the mean of the
enrolment photos) is the special case of one row. With ``paired=True`` row ``i`` belongs to image ``i``
only (1:1 pairs: each chip against its own clean embedding, or each attacker against their own target).
Classifier goals take one label for all images or one per image, and may ask for confidence as well
(``probability``): the true class's probability at most that (dodging), or the target's at least that
(impersonation), the AGN paper's stopping rule.

:func:`goal_loss` is the differentiable objective attacks minimise and :func:`judge` the decision,
computed from the same model outputs, so what an attack optimises is what is checked. The pixel
attacks use the batched, compiled form: :func:`goal_tensors` turns a goal into tensors once, and
:func:`goal_margin` / :func:`goal_objective` evaluate it inside a ``tf.function`` without retracing per
goal. :class:`AttackResult` is what every pixel attack returns.
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


def _label(label) -> int | tuple[int, ...]:
    if isinstance(label, int | np.integer):
        return int(label)
    labels = tuple(int(x) for x in np.asarray(label).reshape(-1))
    if not labels:
        raise AdvfaceError("`label` must be a class index or one per image. Received: an empty sequence.")
    return labels


def _label_subset(labels: tuple[int, ...], index) -> tuple[int, ...]:
    return tuple(np.asarray(labels)[index].reshape(-1).tolist())


def _check_probability(p) -> None:
    if p is not None and not 0.0 < p < 1.0:
        raise AdvfaceError(f"`probability` must be in (0, 1). Received: probability={p!r}.")


@dataclass(frozen=True)
class Dodge:
    """Embedding models: be farther than ``threshold`` from every reference embedding of oneself."""

    reference_embeddings: np.ndarray = field(repr=False)
    threshold: float | None = None  # None: the model's verification threshold
    paired: bool = False  # row i is image i's only reference

    def __post_init__(self):
        object.__setattr__(
            self, "reference_embeddings", _rows(self.reference_embeddings, "reference_embeddings")
        )

    def subset(self, index) -> Dodge:
        """The goal for ``images[index]``."""
        if not self.paired:
            return self
        return Dodge(self.reference_embeddings[index], self.threshold, paired=True)


@dataclass(frozen=True)
class Impersonate:
    """Embedding models: come within ``threshold`` of a target's embedding."""

    target_embeddings: np.ndarray = field(repr=False)
    threshold: float | None = None
    paired: bool = False  # row i is image i's only target

    def __post_init__(self):
        object.__setattr__(self, "target_embeddings", _rows(self.target_embeddings, "target_embeddings"))

    def subset(self, index) -> Impersonate:
        if not self.paired:
            return self
        return Impersonate(self.target_embeddings[index], self.threshold, paired=True)


@dataclass(frozen=True)
class Misidentify:
    """Embedding models, 1:N: the gallery's nearest identity is not the person's own.

    Args:
        gallery: a :class:`~advface.verification.Gallery` (embeddings, labels, metric, threshold).
        labels: the true identity of each attacked image (each must be enrolled in the gallery).
        open_set: also count a probe the gallery rejects as unknown (nearest distance above the
            gallery's threshold) as misidentified.
    """

    gallery: object = field(repr=False)
    labels: tuple[str, ...]
    open_set: bool = False

    def __post_init__(self):
        labels = (self.labels,) if isinstance(self.labels, str) else tuple(str(x) for x in self.labels)
        object.__setattr__(self, "labels", labels)
        known = set(self.gallery.identities)
        missing = sorted(set(labels) - known)
        if missing:
            raise AdvfaceError(
                f"Every attacked face's identity must be enrolled in the gallery. Received: labels not in "
                f"the gallery: {', '.join(missing)}. Known: {', '.join(sorted(known))}."
            )
        if len(known) < 2:
            raise AdvfaceError("Misidentify needs a gallery with at least 2 identities.")

    def subset(self, index) -> Misidentify:
        return Misidentify(self.gallery, tuple(np.asarray(self.labels, object)[index]), self.open_set)


@dataclass(frozen=True)
class Misclassify:
    """Classifiers: the top class is not ``label`` (the attacker's own class)."""

    label: int | tuple[int, ...]  # one for all images, or one per image
    probability: float | None = None  # also require p(label) <= probability

    def __post_init__(self):
        _check_probability(self.probability)
        object.__setattr__(self, "label", _label(self.label))

    def subset(self, index) -> Misclassify:
        return (
            self
            if isinstance(self.label, int)
            else Misclassify(_label_subset(self.label, index), self.probability)
        )


@dataclass(frozen=True)
class TargetClass:
    """Classifiers: the top class is ``label`` (the class to impersonate)."""

    label: int | tuple[int, ...]
    probability: float | None = None  # also require p(label) >= probability

    def __post_init__(self):
        _check_probability(self.probability)
        object.__setattr__(self, "label", _label(self.label))

    def subset(self, index) -> TargetClass:
        return (
            self
            if isinstance(self.label, int)
            else TargetClass(_label_subset(self.label, index), self.probability)
        )


Goal = Dodge | Impersonate | Misidentify | Misclassify | TargetClass


@dataclass(frozen=True)
class Judgement:
    """How model outputs fare against a goal, per image.

    Attributes:
        success: ``(N,)`` bool.
        score: ``(N,)`` float: the distance to the nearest reference/target (embedding goals), the
            distance to the person's own identity (``Misidentify``) or the probability of the goal's
            class (classifier goals).
        predicted: ``(N,)`` int top class (classifiers) or nearest identity's index into
            ``gallery.identities`` (``Misidentify``), else ``None``.
    """

    success: np.ndarray
    score: np.ndarray
    predicted: np.ndarray | None = None


GOAL_NAMES = {
    Dodge: "dodge",
    Impersonate: "impersonate",
    Misidentify: "misidentify",
    Misclassify: "misclassify",
    TargetClass: "target",
}


def goal_name(goal: Goal) -> str:
    """``"dodge"``, ``"impersonate"``, ``"misidentify"``, ``"misclassify"`` or ``"target"``."""
    return GOAL_NAMES[type(goal)]


def check_goal(goal: Goal, model, n: int | None = None) -> None:
    """Raise a clear error when ``goal`` does not fit ``model`` (a zoo ``FaceModel``) or ``n`` images."""
    if isinstance(goal, Dodge | Impersonate | Misidentify):
        if model.kind != "embedding":
            raise AdvfaceError(
                f"{type(goal).__name__} needs an embedding model; {model.name} is a classifier. Use "
                "Misclassify (dodging) or TargetClass (impersonation) with a classifier."
            )
        refs = goal.gallery.embeddings if isinstance(goal, Misidentify) else _refs(goal)
        width = model.keras_model.output_shape[-1]
        if refs.shape[1] != width:
            raise AdvfaceError(
                f"The goal's embeddings have {refs.shape[1]} dimensions but {model.name} gives {width}. "
                "Compute them with the same model."
            )
        if isinstance(goal, Misidentify):
            if goal.gallery.metric != model.spec.distance:
                raise AdvfaceError(
                    f"The gallery measures {goal.gallery.metric} distance but {model.name} uses "
                    f"{model.spec.distance}. Build the gallery with the model's distance."
                )
            _check_count("labels", len(goal.labels), n, broadcast=False)
        else:
            if goal_threshold(goal, model) is None:
                raise AdvfaceError(f"{model.name} has no threshold; pass one to the goal.")
            if goal.paired:
                _check_count("paired embeddings", len(refs), n, broadcast=False)
    elif isinstance(goal, Misclassify | TargetClass):
        if model.kind != "classifier":
            raise AdvfaceError(
                f"{type(goal).__name__} needs a classifier; {model.name} is an embedding model. Use Dodge "
                "or Impersonate with reference embeddings, or Misidentify with a gallery."
            )
        classes = model.keras_model.output_shape[-1]
        labels = np.atleast_1d(goal.label)
        if labels.min() < 0 or labels.max() >= classes:
            raise AdvfaceError(f"Class label out of range 0..{classes - 1}. Received: label={goal.label}.")
        if not isinstance(goal.label, int):
            _check_count("labels", len(goal.label), n, broadcast=False)
    else:
        raise AdvfaceError(
            f"Unknown goal. Received: {goal!r}. Use Dodge, Impersonate, Misidentify, Misclassify or "
            "TargetClass."
        )


def _check_count(what: str, count: int, n: int | None, *, broadcast: bool) -> None:
    if n is not None and count != n:
        raise AdvfaceError(f"The goal needs one row of {what} per image. Received: {count} for {n} images.")


def goal_threshold(goal: Goal, model) -> float | None:
    if isinstance(goal, Dodge | Impersonate):
        return float(goal.threshold if goal.threshold is not None else model.threshold)
    if isinstance(goal, Misidentify):
        return float(goal.gallery.threshold)
    return None


def nearest_distance(outputs, references, metric: str):
    """Distance from each row of ``outputs`` ``(B, D)`` to its nearest row of ``references`` ``(K, D)``.

    A differentiable TensorFlow computation (euclidean, or cosine = 1 - cos similarity).
    """
    import tensorflow as tf

    return tf.reduce_min(_distances(outputs, tf.constant(references, tf.float32), metric), axis=1)


def _distances(outputs, refs, metric: str):
    """``(B, K)`` distances between two sets of embeddings (TensorFlow)."""
    import tensorflow as tf

    if metric == "euclidean":
        sq = tf.reduce_sum((outputs[:, None, :] - refs[None]) ** 2, axis=-1)
        # Smooth at 0 and never flat: a clamp would give a zero gradient to any distance below 1e-6.
        return tf.sqrt(sq + 1e-12)
    if metric == "cosine":
        a = tf.math.l2_normalize(outputs, axis=-1)
        return 1.0 - tf.matmul(a, tf.math.l2_normalize(refs, axis=-1), transpose_b=True)
    raise AdvfaceError(f"Unknown distance. Received: metric={metric!r}. Known: euclidean, cosine.")


def goal_loss(goal: Goal, model, outputs):
    """The AGN paper's per-image loss ``(B,)`` for the eyeglass attack (a TensorFlow tensor).

    Embedding goals: minus the distance to the nearest reference (dodging) or the distance to the
    nearest target (impersonation). Classifier goals: the AGN logit objective ``z_t - sum_{i != t} z_i``
    (dodging, t = own class) and its negative (impersonation, t = target). The pixel attacks use
    :func:`goal_objective`, which offers the standard losses.
    """
    import tensorflow as tf

    if isinstance(goal, Dodge):
        return -nearest_distance(outputs, goal.reference_embeddings, model.spec.distance)
    if isinstance(goal, Impersonate):
        return nearest_distance(outputs, goal.target_embeddings, model.spec.distance)
    if not isinstance(goal, Misclassify | TargetClass) or not isinstance(goal.label, int):
        raise AdvfaceError(
            "The eyeglass attack takes Dodge, Impersonate, or a classifier goal with one label."
        )
    t = int(goal.label)
    own = outputs[:, t]
    objective = 2.0 * own - tf.reduce_sum(outputs, axis=1)  # z_t - sum_{i != t} z_i
    return objective if isinstance(goal, Misclassify) else -objective


def judge(goal: Goal, model, outputs) -> Judgement:
    """Decide, per image, whether model ``outputs`` ``(N, D)`` (embeddings or logits) meet ``goal``."""
    from advface.verification import pairwise_distances

    out = np.asarray(outputs, np.float64)
    n = len(out)
    if isinstance(goal, Dodge | Impersonate):
        d = pairwise_distances(out, _refs(goal), model.spec.distance)
        d = np.diagonal(d).copy() if goal.paired else d.min(axis=1)
        thr = goal_threshold(goal, model)
        success = d > thr if isinstance(goal, Dodge) else d <= thr
        return Judgement(success=success, score=d)
    if isinstance(goal, Misidentify):
        per_identity = _identity_distances(
            goal, pairwise_distances(out, goal.gallery.embeddings, goal.gallery.metric)
        )
        own = _own_index(goal)
        top = per_identity.argmin(axis=1)
        d_own = per_identity[np.arange(n), own]
        success = top != own
        if goal.open_set:
            success |= d_own > goal.gallery.threshold
        return Judgement(success=success, score=d_own, predicted=top)
    probs = np.exp(out - out.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    t = np.broadcast_to(np.asarray(goal.label), (n,))
    top = probs.argmax(axis=1)
    p = probs[np.arange(n), t]
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


def _members(goal: Misidentify) -> np.ndarray:
    """``(M, J)`` one-hot: gallery row -> identity index (``gallery.identities`` order)."""
    names = goal.gallery.identities
    index = {name: j for j, name in enumerate(names)}
    members = np.zeros((len(goal.gallery.labels), len(names)), np.float32)
    members[np.arange(len(goal.gallery.labels)), [index[x] for x in goal.gallery.labels]] = 1.0
    return members


def _own_index(goal: Misidentify) -> np.ndarray:
    index = {name: j for j, name in enumerate(goal.gallery.identities)}
    return np.array([index[x] for x in goal.labels], np.int64)


def _identity_distances(goal: Misidentify, d: np.ndarray) -> np.ndarray:
    """``(N, J)``: distance to each identity = to its closest enrolled image."""
    members = _members(goal).astype(bool)
    return np.stack([d[:, members[:, j]].min(axis=1) for j in range(members.shape[1])], axis=1)


# --- The compiled form used by the pixel attacks -------------------------------------------------------

LOSSES = ("auto", "distance", "ce", "margin", "dlr")
"""Objectives the pixel attacks can minimise; see :func:`goal_objective`."""

FAR = 1e9
"""Added to distances (subtracted from logits) that do not count for an image."""


@dataclass(frozen=True)
class GoalTensors:
    """A goal for one batch as tensors, so one compiled step serves every batch and goal of a kind.

    Attributes:
        kind: :func:`goal_name` of the goal (static).
        metric: the model's distance, or ``""`` for classifiers (static).
        tensors: ``refs`` ``(K, D)``, ``select`` ``(B, K)`` (1 where a reference counts for an image),
            ``members`` ``(K, J)``, ``labels`` ``(B,)`` int32 (own identity / class / target),
            ``threshold``, ``open_set`` and ``scale`` scalars. Unused entries are zero-sized.
    """

    kind: str
    metric: str
    tensors: dict


def goal_tensors(goal: Goal, model, n: int) -> GoalTensors:
    """The tensors of ``goal`` for a batch of ``n`` images (checked with :func:`check_goal` first)."""
    import tensorflow as tf

    kind = goal_name(goal)
    refs = np.zeros((0, 1), np.float32)
    select = np.zeros((n, 0), np.float32)
    members = np.zeros((0, 0), np.float32)
    labels = np.zeros((n,), np.int32)
    threshold = goal_threshold(goal, model) or 0.0
    if isinstance(goal, Dodge | Impersonate):
        refs = _refs(goal)
        select = np.eye(n, dtype=np.float32) if goal.paired else np.ones((n, len(refs)), np.float32)
    elif isinstance(goal, Misidentify):
        refs = goal.gallery.embeddings.astype(np.float32)
        members = _members(goal)
        labels = _own_index(goal).astype(np.int32)
    else:
        labels = np.broadcast_to(np.asarray(goal.label, np.int32), (n,)).copy()
    tensors = {
        "refs": tf.constant(refs, tf.float32),
        "select": tf.constant(select, tf.float32),
        "members": tf.constant(members, tf.float32),
        "labels": tf.constant(labels, tf.int32),
        "threshold": tf.constant(threshold, tf.float32),
        "open_set": tf.constant(float(getattr(goal, "open_set", False)), tf.float32),
        # Logit units per distance unit: 10 logits over the threshold's width.
        "scale": tf.constant(10.0 / threshold if threshold > 0 else 1.0, tf.float32),
    }
    return GoalTensors(kind=kind, metric=model.spec.distance or "", tensors=tensors)


def default_loss(kind: str) -> str:
    """What ``loss="auto"`` means: the distance itself for 1:1 goals, cross-entropy otherwise."""
    return "distance" if kind in ("dodge", "impersonate") else "ce"


def goal_logits(kind: str, metric: str, t: dict, outputs):
    """Class logits and the label they are judged by: the classifier's own, or for ``Misidentify``
    ``-scale * distance`` to each identity (its closest enrolled image)."""
    import tensorflow as tf

    if kind == "misidentify":
        d = _distances(outputs, t["refs"], metric)  # (B, M)
        masked = d[:, :, None] + (1.0 - t["members"][None]) * FAR  # (B, M, J)
        return -t["scale"] * tf.reduce_min(masked, axis=1), t["labels"]
    return outputs, t["labels"]


def _nearest(metric: str, t: dict, outputs):
    import tensorflow as tf

    d = _distances(outputs, t["refs"], metric)
    return tf.reduce_min(d + (1.0 - t["select"]) * FAR, axis=1)


def _top_other(z, labels):
    """``(max_{j != label} z_j, z_label)``."""
    import tensorflow as tf

    own = tf.gather(z, labels, axis=1, batch_dims=1)
    onehot = tf.one_hot(labels, tf.shape(z)[1], dtype=z.dtype)
    other = tf.reduce_max(z - onehot * FAR, axis=1)
    return other, own


def goal_margin(kind: str, metric: str, t: dict, outputs):
    """Per-image margin ``(B,)``: negative exactly when the goal is met (TensorFlow).

    Dodge ``threshold - d``; Impersonate ``d - threshold``; Misidentify ``d_other - d_own`` with
    ``d_other`` the nearest other identity (open set: or ``threshold - d_own``); Misclassify
    ``z_y - max_{j != y} z_j``; TargetClass ``max_{j != t} z_j - z_t`` (the C&W margins). Classifier
    ``probability`` requirements are left to :func:`judge`.
    """
    import tensorflow as tf

    if kind == "dodge":
        return t["threshold"] - _nearest(metric, t, outputs)
    if kind == "impersonate":
        return _nearest(metric, t, outputs) - t["threshold"]
    z, labels = goal_logits(kind, metric, t, outputs)
    other, own = _top_other(z, labels)
    if kind == "target":
        return other - own
    margin = own - other
    if kind == "misidentify":
        margin = margin / t["scale"]  # back to distance units: d_other - d_own
        rejected = t["threshold"] + own / t["scale"]  # threshold - d_own
        margin = tf.where(t["open_set"] > 0, tf.minimum(margin, rejected), margin)
    return margin


def goal_objective(kind: str, metric: str, t: dict, outputs, loss: str):
    """Per-image objective ``(B,)`` an attack minimises (TensorFlow).

    Args:
        loss: ``"distance"``: ``-d`` (dodge) or ``d`` (impersonate), 1:1 goals only; ``"ce"``: minus the
            cross-entropy of the true class (misclassify, misidentify), the cross-entropy of the target
            (target), or for 1:1 goals the logistic loss ``softplus(scale * margin)``; ``"margin"``:
            :func:`goal_margin`; ``"dlr"``: the difference-of-logits ratio of Croce & Hein (2020),
            targeted form for ``TargetClass``; for 1:1 goals ``margin / threshold``, which like DLR is
            invariant to rescaling the model's outputs.
    """
    import tensorflow as tf

    if loss == "auto":
        loss = default_loss(kind)
    if loss == "margin":
        return goal_margin(kind, metric, t, outputs)
    if kind in ("dodge", "impersonate"):
        if loss == "distance":
            d = _nearest(metric, t, outputs)
            return -d if kind == "dodge" else d
        margin = goal_margin(kind, metric, t, outputs)
        if loss == "ce":
            return tf.nn.softplus(t["scale"] * margin)
        if loss == "dlr":
            return margin / t["threshold"]
    else:
        z, labels = goal_logits(kind, metric, t, outputs)
        if loss == "ce":
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z)
            return ce if kind == "target" else -ce
        if loss == "dlr":
            other, own = _top_other(z, labels)
            ranked = tf.sort(z, axis=1, direction="DESCENDING")
            c = tf.shape(z)[1]
            third = ranked[:, tf.minimum(2, c - 1)]
            if kind == "target":
                fourth = ranked[:, tf.minimum(3, c - 1)]
                return (other - own) / (ranked[:, 0] - 0.5 * (third + fourth) + 1e-12)
            return (own - other) / (ranked[:, 0] - third + 1e-12)
        if loss == "distance":
            raise AdvfaceError(
                f"loss='distance' is for Dodge and Impersonate; a {kind} goal takes 'ce', 'margin' or 'dlr'."
            )
    raise AdvfaceError(f"Unknown loss. Received: loss={loss!r}. Known: {', '.join(LOSSES)}.")


# --- Results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackResult:
    """What a pixel attack returns.

    Attributes:
        attack: the attack's name (``"PGD"``, ...).
        goal: :func:`goal_name` of the goal.
        norm: ``"linf"`` or ``"l2"``, the norm the budget is in.
        epsilon: the budget (``None`` for minimal-perturbation attacks without one).
        images: ``(N, H, W, 3)`` float32 adversarial images in ``[0, 1]``.
        success: ``(N,)`` bool, judged on ``images`` with a fresh forward pass.
        success_8bit: ``(N,)`` bool, judged with a fresh forward pass after rounding ``images`` to 8 bits
            (as they would be saved).
        clean_success: ``(N,)`` bool, whether the clean images already met the goal.
        scores: ``(N,)`` :attr:`Judgement.score` of the adversarial images; ``clean_scores`` of the clean.
        predicted: ``(N,)`` predicted class or identity index after the attack, or ``None``.
        linf, l2: ``(N,)`` norms of the perturbation ``images - clean`` (pixel units, [0, 1] scale).
        steps: ``(N,)`` optimisation steps run on each image.
        queries: ``(N,)`` forward passes of the model spent on each image (gradient passes included).
        history: one entry per progress step, equal-length arrays ``batch``, ``step``, ``loss`` (mean
            objective of the batch), ``success_rate`` (of the batch at that step).
        seed: the seed used.
        seconds: wall time of the call.
    """

    attack: str
    goal: str
    norm: str
    epsilon: float | None
    images: np.ndarray = field(repr=False)
    success: np.ndarray
    success_8bit: np.ndarray
    clean_success: np.ndarray
    scores: np.ndarray
    clean_scores: np.ndarray
    predicted: np.ndarray | None
    linf: np.ndarray
    l2: np.ndarray
    steps: np.ndarray
    queries: np.ndarray
    history: dict = field(repr=False)
    seed: int | None
    seconds: float

    @property
    def success_rate(self) -> float:
        """Share of images on which the attack met the goal (fresh forward pass)."""
        return float(np.mean(self.success)) if len(self.success) else 0.0

    @property
    def norms(self) -> np.ndarray:
        """Perturbation norms in the attack's norm."""
        return self.linf if self.norm == "linf" else self.l2
