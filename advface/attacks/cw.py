"""The Carlini & Wagner L2 attack: the smallest L2 perturbation that meets the goal.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks" (IEEE S&P 2017), section V.A.
Per image, C&W minimise over ``w``

    ||x' - x||_2^2 + c * max(margin(x'), -kappa),    x' = (tanh(w) + 1) / 2,

with Adam, where ``margin`` is :func:`~advface.attacks.base.goal_margin` (negative exactly when the goal
is met: the C&W logit margin for classifiers, ``threshold - d`` for dodging, ``d - threshold`` for
impersonation, ``d_nearest_other - d_own`` for 1:N misidentification) and ``kappa`` the ``confidence``.
The change of variables keeps ``x'`` in the box without clipping; with a mask only the masked pixels
follow ``w``. The constant ``c`` is found by a binary search per image: multiplied by 10 while no round
has succeeded, bisected between the bounds once one has. Each round starts afresh (Adam's state too) from
the clean image, or a hair off it when the clean embedding is its own reference (dodging, a gallery that
holds the probe), where the distance has no gradient (see ``pixel.start_off_clean``).

Abort early, per image: C&W stop a round when the loss has not fallen by 1e-4 (relative) in
``steps // 10`` steps, comparing single iterates. With the short rounds used here (100 steps, windows of
10) that stops rounds still leaving the start and is at the mercy of Adam's oscillation, so this attack
compares the lowest loss of each window with the lowest of the window before, and never judges the first.

Every step counts: per image the attack keeps the smallest-L2 iterate that met the goal (with margin
below ``-kappa``) at any step of any round, not the last iterate. This is what CertRobFR's C&W lacks (a
fixed ``c``, no search, the last iterate returned).

Images on which no iterate ever succeeded: C&W return the clean image; this attack returns the iterate
that came closest (the lowest margin seen), so that ``scores`` and ``l2`` in the result tell how far the
attack got. ``success`` is ``False`` for them either way.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from advface.attacks.base import goal_margin
from advface.attacks.pixel import (
    Batch,
    BatchOutcome,
    PixelAttack,
    check_positive,
    check_range,
    start_off_clean,
)

_BETA1, _BETA2, _ADAM_EPSILON = 0.9, 0.999, 1e-8  # Adam's defaults (Kingma & Ba 2015), as C&W use
_BOX = 1.0 - 1e-6  # arctanh(+-1) is infinite: pixels at 0 or 1 start a hair inside
_UNBOUNDED = 1e10  # C&W's "no upper bound on c yet"


class CarliniWagnerL2(PixelAttack):
    """Carlini & Wagner's L2 attack with a binary search over the trade-off constant.

    Args:
        epsilon: optional L2 cap; ``None`` (the default) for the unbounded minimal-perturbation attack.
            When given, the result is projected onto the ball afterwards (which may undo success).
        norm: ``"l2"`` (the only norm of this attack).
        steps: Adam steps per binary-search round.
        binary_search_steps: rounds of the search over ``c``.
        initial_const: ``c`` in the first round.
        learning_rate: Adam's step size in ``w`` (tanh) space.
        confidence: ``kappa``, how far past the boundary an iterate must be to count (in the goal's margin
            units: logits for classifiers, distance for 1:1 goals and misidentification).
        abort_early: stop an image's round once the lowest loss of the last ``steps // 10`` steps is not
            1e-4 (relative) below the lowest of the ``steps // 10`` before (see the module docstring).
        batch_size: images attacked together.

    Example:
        >>> attack = CarliniWagnerL2(steps=100, binary_search_steps=5)
        >>> result = attack(model, chips, Dodge(model.embed(chips), paired=True), seed=0)
        >>> result.l2[result.success]
    """

    name = "C&W-L2"
    supported_norms = ("l2",)
    needs_epsilon = False

    def __init__(
        self,
        *,
        epsilon: float | None = None,
        norm: str = "l2",
        steps: int = 100,
        binary_search_steps: int = 5,
        initial_const: float = 1.0,
        learning_rate: float = 0.01,
        confidence: float = 0.0,
        abort_early: bool = True,
        batch_size: int = 32,
    ):
        super().__init__(epsilon=epsilon, norm=norm, loss="margin", batch_size=batch_size)
        check_positive(steps=steps, binary_search_steps=binary_search_steps)
        check_range("initial_const", initial_const, 1e-12, _UNBOUNDED)
        check_range("learning_rate", learning_rate, 1e-12, np.inf)
        check_range("confidence", confidence, 0.0, np.inf)
        self.steps = int(steps)
        self.binary_search_steps = int(binary_search_steps)
        self.initial_const = float(initial_const)
        self.learning_rate = float(learning_rate)
        self.confidence = float(confidence)
        self.abort_early = bool(abort_early)

    def planned_steps(self) -> int:
        return self.steps * self.binary_search_steps

    def _step_function(self, batch: Batch):
        keras_model = batch.model.keras_model
        kind, metric = batch.goal.kind, batch.goal.metric

        def build():
            @tf.function(reduce_retracing=True)
            def step(x, w, adam, best, t, mask, const, active, learning_rate, kappa):
                # 1. Loss of the current iterate, and its gradient in tanh space.
                with tf.GradientTape() as tape:
                    tape.watch(w)
                    x_adv = x + mask * ((tf.tanh(w) + 1.0) / 2.0 - x)
                    l2 = tf.reduce_sum((x_adv - x) ** 2, axis=[1, 2, 3])
                    margin = goal_margin(kind, metric, t, keras_model(x_adv, training=False))
                    loss = l2 + const * tf.maximum(margin, -kappa)
                    total = tf.reduce_sum(loss)
                grad = tape.gradient(total, w)
                # 2. Keep the iterate if it is the best so far.
                best = _keep_best(best, x_adv, l2, margin, margin < -kappa)
                # 3. One Adam step, on the images still being optimised.
                m, v, count = adam
                on = active[:, None, None, None]
                count = count + tf.cast(active, tf.float32)
                m = tf.where(on, _BETA1 * m + (1.0 - _BETA1) * grad, m)
                v = tf.where(on, _BETA2 * v + (1.0 - _BETA2) * grad**2, v)
                k = tf.maximum(count, 1.0)[:, None, None, None]
                update = (m / (1.0 - _BETA1**k)) / (tf.sqrt(v / (1.0 - _BETA2**k)) + _ADAM_EPSILON)
                w = tf.where(on, w - learning_rate * update, w)
                return w, (m, v, count), best, loss, margin

            return step

        return self._compiled(batch, ("cw",), build)

    def _attack_batch(self, batch: Batch) -> BatchOutcome:
        x, t, mask = batch.images, batch.goal.tensors, batch.mask
        step = self._step_function(batch)
        learning_rate = tf.constant(self.learning_rate, tf.float32)
        kappa = tf.constant(self.confidence, tf.float32)
        b = int(x.shape[0])
        every = max(1, self.steps // 10)
        lower, upper = np.zeros(b), np.full(b, _UNBOUNDED)
        const = np.full(b, self.initial_const)
        best = _empty_best(x)
        steps = np.zeros(b, np.int64)
        offset, queries = start_off_clean(batch)
        start = tf.atanh(tf.clip_by_value(2.0 * (x + offset) - 1.0, -_BOX, _BOX))
        for _ in range(self.binary_search_steps):
            # 1. Start at the clean image (or a hair off it, see start_off_clean) in tanh space, Adam afresh.
            w = start
            adam = (tf.zeros_like(x), tf.zeros_like(x), tf.zeros([b], tf.float32))
            active = np.ones(b, bool)
            previous = np.zeros(b)
            lowest = np.full(b, np.inf)
            succeeded = np.zeros(b, bool)
            c = tf.constant(const, tf.float32)
            # 2. Adam steps, each reported; an image stops when its loss stalls (abort early).
            for i in range(self.steps):
                w, adam, best, loss, margin = step(
                    x, w, adam, best, t, mask, c, tf.constant(active), learning_rate, kappa
                )
                loss, margin = loss.numpy().astype(np.float64), margin.numpy()
                batch.step(loss, margin < 0)
                succeeded |= margin < -np.float32(self.confidence)
                steps += active
                lowest = np.minimum(lowest, loss)
                if self.abort_early and i > 0 and i % every == 0:
                    # Stalled: the window's lowest loss is not 1e-4 below the previous window's. The
                    # first window (leaving the start) is not judged.
                    if i > every:
                        active &= lowest <= previous - 1e-4 * np.abs(previous)
                    previous, lowest = np.where(active, lowest, previous), np.full(b, np.inf)
                    if not active.any():
                        break
            # 3. The search over c: down to the middle after a success, else up (x10 until bounded).
            upper = np.where(succeeded, np.minimum(upper, const), upper)
            lower = np.where(succeeded, lower, np.maximum(lower, const))
            bounded = upper < _UNBOUNDED
            const = np.where(bounded, (lower + upper) / 2.0, const * 10.0)
        adversarial = best[0].numpy()
        return BatchOutcome(adversarial, steps, queries + steps)


def _empty_best(x):
    b = tf.shape(x)[0]
    inf = tf.fill([b], np.float32(np.inf))
    return (tf.identity(x), inf, inf, tf.zeros([b], tf.bool))


def _keep_best(best, x_adv, l2, margin, success):
    """Per image, keep ``x_adv`` if it succeeds where the best did not, succeeds with a smaller L2, or
    fails like the best with a lower margin. ``best`` is ``(images, l2, margin, success)``."""
    best_x, best_l2, best_margin, best_success = best
    better = (
        (success & ~best_success)
        | (success & best_success & (l2 < best_l2))
        | (~success & ~best_success & (margin < best_margin))
    )
    return (
        tf.where(better[:, None, None, None], x_adv, best_x),
        tf.where(better, l2, best_l2),
        tf.where(better, margin, best_margin),
        tf.where(better, success, best_success),
    )
