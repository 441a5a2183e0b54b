"""What every pixel-space attack shares: checks, batching, the compiled gradient, projection, results.

A pixel attack perturbs aligned face chips ``x`` (float32 ``(N, S, S, 3)`` in ``[0, 1]``) by ``delta``
with ``||delta|| <= epsilon`` in the L-infinity or L2 norm, optionally only where a ``mask`` is 1 (an
eyeglass frame, a sticker, the forehead), so that the face model's outputs meet a goal
(:mod:`advface.attacks.base`). Subclasses implement :meth:`PixelAttack._attack_batch` for one batch;
:meth:`PixelAttack.__call__` does the rest the same way for all of them:

1. validate images, goal and mask; draw a seed when none is given (the result records it);
2. judge the clean images;
3. attack batch by batch (``batch_size``), each batch's goal turned into tensors once, so the compiled
   step is traced once per attack and kind of goal; progress is reported once per step and a
   :class:`~advface.progress.Cancelled` raised by the callback stops the attack;
4. enforce the contract exactly: range ``[0, 1]``, the mask, the budget;
5. judge the adversarial images with a fresh forward pass, and again after rounding them to 8 bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import tensorflow as tf

from advface.attacks.base import (
    LOSSES,
    AttackResult,
    Goal,
    GoalTensors,
    check_goal,
    goal_logits,
    goal_margin,
    goal_name,
    goal_objective,
    goal_tensors,
    judge,
)
from advface.errors import AdvfaceError
from advface.images import check_images
from advface.progress import ProgressCallback, report

NORMS = ("linf", "l2")
_FLOOR = 1e-5  # a distance this small is at its floor (1e-6) or near it: no usable gradient


def parse_epsilon(text: str | float) -> float:
    """``"8/255"``, ``"0.03"`` or a number -> float."""
    if isinstance(text, int | float):
        return float(text)
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise AdvfaceError(f"An epsilon is a number or a fraction like 8/255. Received: {text!r}.") from None


def prepare_mask(mask, shape: tuple[int, ...]) -> np.ndarray | None:
    """Broadcast a pixel mask to ``shape`` ``(N, H, W, 3)``; 1 where pixels may change, 0 where not.

    Values of 0.5 and more count as 1, lower ones as 0 (resized or JPEG masks have grey edges).

    Accepts ``(H, W)``, ``(H, W, 1|3)``, ``(N, H, W)`` or ``(N, H, W, 1|3)`` with values in ``[0, 1]``.
    """
    if mask is None:
        return None
    m = np.asarray(mask, np.float32)
    n, h, w, _ = shape
    if m.ndim == 2 or (m.ndim == 3 and m.shape[-1] in (1, 3) and m.shape[:2] == (h, w)):
        m = m[None]
    if m.ndim == 3:
        m = m[..., None]
    if m.ndim != 4 or m.shape[1:3] != (h, w) or m.shape[0] not in (1, n) or m.shape[-1] not in (1, 3):
        raise AdvfaceError(
            f"`mask` must be (H, W), (H, W, 1|3), (N, H, W) or (N, H, W, 1|3) for images of shape {shape}. "
            f"Received: mask.shape={np.shape(mask)}."
        )
    if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise AdvfaceError("`mask` values must be in [0, 1] (1 = may change). Received values outside.")
    m = (m >= 0.5).astype(np.float32)  # binary: a soft mask would shrink steps again at every projection
    if not m.any():
        raise AdvfaceError("`mask` is all zeros (below 0.5): the attack could not change any pixel.")
    return np.ascontiguousarray(np.broadcast_to(m, shape))


def project(delta, epsilon, norm: str):
    """Project perturbations ``(B, H, W, 3)`` onto the ``norm`` ball of radius ``epsilon`` (TensorFlow)."""
    if norm == "linf":
        return tf.clip_by_value(delta, -epsilon, epsilon)
    norms = tf.sqrt(tf.reduce_sum(delta**2, axis=[1, 2, 3], keepdims=True) + 1e-24)
    return delta * tf.minimum(1.0, epsilon / norms)


def normalise(g, norm: str):
    """The steepest-ascent direction of unit ``norm`` for gradient ``g``: its sign (Linf) or g / ||g||_2."""
    if norm == "linf":
        return tf.sign(g)
    return g / tf.sqrt(tf.reduce_sum(g**2, axis=[1, 2, 3], keepdims=True) + 1e-24)


def random_start(shape, epsilon, norm: str, seed):
    """Uniform in the Linf box, or uniform in the L2 ball (Gaussian direction, radius eps * u^(1/n))."""
    seed = tf.cast(seed, tf.int32)
    if norm == "linf":
        return tf.random.stateless_uniform(shape, seed, -1.0, 1.0) * epsilon
    g = tf.random.stateless_normal(shape, seed)
    g = g / tf.sqrt(tf.reduce_sum(g**2, axis=[1, 2, 3], keepdims=True) + 1e-24)
    dims = tf.cast(tf.reduce_prod(shape[1:]), tf.float32)
    u = tf.random.stateless_uniform([shape[0], 1, 1, 1], seed + 1)
    return g * epsilon * u ** (1.0 / dims)


def in_box(x, delta):
    """Clip ``delta`` so that ``x + delta`` stays in ``[0, 1]``."""
    return tf.clip_by_value(x + delta, 0.0, 1.0) - x


@dataclass(frozen=True)
class Batch:
    """One batch as the attacks see it.

    Attributes:
        model: the zoo ``FaceModel``.
        images: ``(B, S, S, 3)`` float32 tensor of clean chips.
        goal: the batch's goal as tensors (:class:`~advface.attacks.base.GoalTensors`).
        mask: ``(B, S, S, 3)`` float32 tensor, ones when no mask was given.
        seed: the batch's seed.
        index: the batch's number.
    """

    model: object
    images: tf.Tensor
    goal: GoalTensors
    mask: tf.Tensor
    seed: int
    index: int
    tracker: _Tracker

    def step(self, loss, success) -> None:
        """Record one step (progress callback, history)."""
        self.tracker.step(self.index, float(np.mean(loss)), float(np.mean(success)))


@dataclass(frozen=True)
class BatchOutcome:
    """What :meth:`PixelAttack._attack_batch` returns: adversarial images ``(B, S, S, 3)`` and per-image
    steps and model queries."""

    images: np.ndarray
    steps: np.ndarray
    queries: np.ndarray


class _Tracker:
    def __init__(self, progress: ProgressCallback | None, total: int | None, stage: str):
        self.progress, self.total, self.stage = progress, total, stage
        self.history: dict[str, list] = {"batch": [], "step": [], "loss": [], "success_rate": []}
        self.count = 0

    def step(self, batch: int, loss: float, success_rate: float) -> None:
        self.count += 1
        h = self.history
        h["batch"].append(batch)
        h["step"].append(self.count)
        h["loss"].append(loss)
        h["success_rate"].append(success_rate)
        report(self.progress, self.count, self.total, self.stage, loss=loss, success_rate=success_rate)


class PixelAttack:
    """Base class of the pixel attacks (see the module docstring).

    Args:
        epsilon: the budget in ``norm`` (pixel values in ``[0, 1]``: 8/255 is 8 grey levels); ``None``
            only for minimal-perturbation attacks.
        norm: ``"linf"`` or ``"l2"``.
        loss: the objective (:data:`~advface.attacks.base.LOSSES`); ``"auto"``: distance for 1:1
            goals, cross-entropy otherwise.
        batch_size: images attacked together.
    """

    name: ClassVar[str] = ""
    supported_norms: ClassVar[tuple[str, ...]] = NORMS
    needs_epsilon: ClassVar[bool] = True
    # Hyperparameters the compiled functions take as tensors; all others are baked into the trace.
    dynamic: ClassVar[tuple[str, ...]] = ()
    # Compiled functions shared by all instances with the same static settings (an epsilon sweep or a
    # bisection builds many attacks; each would otherwise trace the model's gradient again).
    _shared: ClassVar[dict] = {}

    def __init__(
        self, *, epsilon: float | None, norm: str = "linf", loss: str = "auto", batch_size: int = 32
    ):
        if norm not in self.supported_norms:
            raise AdvfaceError(
                f"{self.name} attacks in {', '.join(self.supported_norms)}. Received: norm={norm!r}."
            )
        if epsilon is None and self.needs_epsilon:
            raise AdvfaceError(f"{self.name} needs a budget. Received: epsilon=None. Try epsilon=8/255.")
        if epsilon is not None and not (np.isfinite(epsilon) and epsilon > 0):
            raise AdvfaceError(f"`epsilon` must be > 0. Received: epsilon={epsilon!r}.")
        if loss not in LOSSES:
            raise AdvfaceError(f"Unknown loss. Received: loss={loss!r}. Known: {', '.join(LOSSES)}.")
        check_positive(batch_size=batch_size)
        self.epsilon = None if epsilon is None else float(epsilon)
        self.norm = norm
        self.loss = loss
        self.batch_size = int(batch_size)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({items})"

    # --- what subclasses implement -------------------------------------------------------------------

    def planned_steps(self) -> int:
        """Progress steps per batch at most (the progress bar's total per batch)."""
        raise NotImplementedError

    def _attack_batch(self, batch: Batch) -> BatchOutcome:
        raise NotImplementedError

    # --- the call ------------------------------------------------------------------------------------

    def __call__(
        self,
        model,
        images,
        goal: Goal,
        *,
        mask=None,
        progress: ProgressCallback | None = None,
        seed: int | None = None,
    ) -> AttackResult:
        """Attack aligned chips ``images`` so that ``model`` meets ``goal`` on them.

        Args:
            model: a zoo ``FaceModel`` (``advface.zoo.load_model``).
            images: ``(N, S, S, 3)`` float32 chips in ``[0, 1]`` for the model's template.
            goal: ``Dodge``, ``Impersonate``, ``Misidentify``, ``Misclassify`` or ``TargetClass``.
            mask: optional region the attack may change (see :func:`prepare_mask`).
            progress: called once per step with a :class:`~advface.progress.Progress`; raise
                :class:`~advface.progress.Cancelled` in it to stop.
            seed: makes the attack reproducible; drawn (and recorded in the result) when ``None``.

        Returns:
            An :class:`~advface.attacks.base.AttackResult`.
        """
        start = time.perf_counter()
        size = model.input_size
        images = check_images(images, size=(size, size))
        n = len(images)
        if n == 0:
            raise AdvfaceError("No images to attack. Received: images.shape[0] == 0.")
        check_goal(goal, model, n=n)
        mask = prepare_mask(mask, images.shape)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        seed = int(seed) % (2**31 - 1)  # TensorFlow's stateless seeds are int32
        if getattr(goal, "probability", None) is not None:
            raise AdvfaceError(
                f"The pixel attacks optimise and keep the top class only. Received: probability="
                f"{goal.probability}. Leave it out (the eyeglass attack takes it)."
            )

        # 1. The clean decision.
        clean = judge(goal, model, model.embed(images, batch_size=self.batch_size))

        # 2. Batch by batch.
        starts = range(0, n, self.batch_size)
        tracker = _Tracker(progress, self.planned_steps() * len(starts), self.name)
        adversarial = np.empty_like(images)
        steps = np.zeros(n, np.int64)
        queries = np.zeros(n, np.int64)
        for b, first in enumerate(starts):
            index = np.arange(first, min(first + self.batch_size, n))
            x = images[index]
            batch = Batch(
                model=model,
                images=tf.constant(x),
                goal=goal_tensors(goal.subset(index), model, len(index)),
                mask=tf.constant(mask[index] if mask is not None else np.ones_like(x)),
                seed=(seed + 7919 * b) % (2**31 - 1),
                index=b,
                tracker=tracker,
            )
            outcome = self._attack_batch(batch)
            adversarial[index] = outcome.images
            steps[index] = outcome.steps
            queries[index] = outcome.queries

        # 3. The contract, exactly: mask, budget, range.
        delta = adversarial - images
        if mask is not None:
            delta = np.where(mask > 0, delta, 0.0).astype(np.float32)
        if self.epsilon is not None:
            delta = project(tf.constant(delta), self.epsilon, self.norm).numpy()
        adversarial = np.clip(images + delta, 0.0, 1.0).astype(np.float32)  # outside the mask: images
        delta = (adversarial - images).reshape(n, -1).astype(np.float64)

        # 4. A fresh forward pass, and one on the 8-bit images.
        after = judge(goal, model, model.embed(adversarial, batch_size=self.batch_size))
        rounded = np.round(adversarial * 255.0) / 255.0
        after_8bit = judge(goal, model, model.embed(rounded.astype(np.float32), batch_size=self.batch_size))
        return AttackResult(
            attack=self.name,
            goal=goal_name(goal),
            norm=self.norm,
            epsilon=self.epsilon,
            images=adversarial,
            success=after.success,
            success_8bit=after_8bit.success,
            clean_success=clean.success,
            scores=after.score,
            clean_scores=clean.score,
            predicted=after.predicted,
            linf=np.abs(delta).max(axis=1),
            l2=np.sqrt((delta**2).sum(axis=1)),
            steps=steps,
            queries=queries,
            history={k: np.asarray(v) for k, v in tracker.history.items()},
            seed=seed,
            seconds=time.perf_counter() - start,
        )

    # --- compiled pieces shared by the gradient attacks -----------------------------------------------

    def _compiled(self, batch: Batch, key: tuple, build):
        """A ``tf.function`` built once per model, kind of goal, static settings and ``key``; reused
        across calls and across instances with the same static settings."""
        static = tuple(
            (k, repr(v))
            for k, v in sorted(vars(self).items())
            if not k.startswith("_") and k not in self.dynamic
        )
        full = (type(self), id(batch.model.keras_model), batch.goal.kind, batch.goal.metric, static, *key)
        if full not in PixelAttack._shared:
            # The model is kept with its functions so that its id cannot be reused by another model.
            PixelAttack._shared[full] = (batch.model.keras_model, build())
        return PixelAttack._shared[full][1]

    def _gradient_function(self, batch: Batch, loss: str | None = None):
        """``f(x_adv, goal_tensors) -> (objective (B,), margin (B,), d objective / d x_adv)``."""
        loss = loss or self.loss
        keras_model = batch.model.keras_model
        kind, metric = batch.goal.kind, batch.goal.metric

        def build():
            @tf.function(reduce_retracing=True)
            def gradient(x_adv, t):
                with tf.GradientTape() as tape:
                    tape.watch(x_adv)
                    outputs = keras_model(x_adv, training=False)
                    objective = goal_objective(kind, metric, t, outputs, loss)
                    total = tf.reduce_sum(objective)
                grad = tape.gradient(total, x_adv)
                return objective, goal_margin(kind, metric, t, outputs), grad

            return gradient

        return self._compiled(batch, ("gradient", loss), build)

    def _evaluate_function(self, batch: Batch, loss: str | None = None):
        """``f(x_adv, goal_tensors) -> (objective (B,), margin (B,))`` without a gradient."""
        loss = loss or self.loss
        keras_model = batch.model.keras_model
        kind, metric = batch.goal.kind, batch.goal.metric

        def build():
            @tf.function(reduce_retracing=True)
            def evaluate(x_adv, t):
                outputs = keras_model(x_adv, training=False)
                return goal_objective(kind, metric, t, outputs, loss), goal_margin(kind, metric, t, outputs)

            return evaluate

        return self._compiled(batch, ("evaluate", loss), build)


def check_positive(**values) -> None:
    """Raise unless every keyword value is an integer >= 1 (for the attacks' ``__init__``)."""
    for name, value in values.items():
        if value is None or int(value) != value or value < 1:
            raise AdvfaceError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}.")


def check_range(name: str, value, low: float, high: float) -> None:
    """Raise unless ``low <= value <= high``."""
    if value is None or not (np.isfinite(value) and low <= value <= high):
        raise AdvfaceError(f"`{name}` must be in [{low}, {high}]. Received: {name}={value!r}.")


def empty_best(x):
    """The best-so-far state ``(delta, objective, success)`` before any iterate: nothing, infinitely bad."""
    b = tf.shape(x)[0]
    return (tf.zeros_like(x), tf.fill([b], np.float32(np.inf)), tf.zeros([b], tf.bool))


def keep_best(best, delta, objective, success):
    """Per image, keep ``delta`` if it succeeds where the best did not, or succeeds equally with a lower
    objective. ``best`` is ``(delta, objective, success)``."""
    best_delta, best_objective, best_success = best
    better = (success & ~best_success) | ((success == best_success) & (objective < best_objective))
    pick = better[:, None, None, None]
    return (
        tf.where(pick, delta, best_delta),
        tf.where(better, objective, best_objective),
        tf.where(better, success, best_success),
    )


def start_off_clean(batch: Batch) -> tuple[tf.Tensor, np.ndarray]:
    """Where the attacks begin: the clean image, except a random offset off it when dodging or
    misidentifying a face whose clean embedding is its own reference.

    There the distance to it is at its minimum and its gradient exactly zero: dodging has no boundary to
    linearise towards (nor a descent direction for C&W), and an open-set gallery's rejection boundary
    (own distance above the threshold) is invisible. Per image the offset is the smallest of L2 1e-3,
    1e-2, 1e-1 and 1 that lifts the distance off its floor (``_FLOOR``; distances are at least 1e-6);
    real face models need the first, a negligible cost to the norm.

    Returns:
        The offset ``(B, S, S, 3)`` (masked, in the box) and the forward passes spent per image.
    """
    x, t, kind, metric = batch.images, batch.goal.tensors, batch.goal.kind, batch.goal.metric
    b = int(x.shape[0])
    if kind not in ("dodge", "misidentify"):
        return tf.zeros_like(x), np.zeros(b, np.int64)
    direction = normalise(random_start(tf.shape(x), 1.0, "l2", [batch.seed, 0]) * batch.mask, "l2")
    offset = tf.zeros_like(x)
    pending = np.ones(b, bool)
    queries = np.zeros(b, np.int64)
    for size in (1e-3, 1e-2, 1e-1, 1.0):
        candidate = in_box(x, size * direction)
        offset = tf.where(tf.constant(pending)[:, None, None, None], candidate, offset)
        outputs = batch.model.keras_model(x + candidate, training=False)
        if kind == "dodge":
            distance = t["threshold"] - goal_margin(kind, metric, t, outputs)
        else:
            z, labels = goal_logits(kind, metric, t, outputs)
            distance = -tf.gather(z, labels, axis=1, batch_dims=1) / t["scale"]
        queries += pending
        pending &= distance.numpy() <= _FLOOR
        if not pending.any():
            break
    return offset, queries
