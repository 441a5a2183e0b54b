"""MI-FGSM with input diversity (DI) and translation invariance (TI): attacks made to transfer.

- MI-FGSM (Dong et al., CVPR 2018): iterated FGSM whose direction is a momentum of L1-normalised
  gradients, ``g <- mu * g + grad / ||grad||_1``, step ``step_size * sign(g)`` (L2: ``g / ||g||_2``).
- DI (Xie et al., CVPR 2019): with probability ``diversity_prob`` the gradient is taken through a random
  resize-and-pad of the image. The original enlarges a 299 image to a random size below 330 and feeds
  that to an Inception net; face models take a fixed input size, so here the image shrinks to a random
  side in ``[0.9 S, S]`` and is padded back to ``S`` at a random offset (the same family of transforms).
- TI (Dong et al., CVPR 2019): the gradient is smoothed with a Gaussian kernel of ``ti_kernel`` pixels
  spanning +-3 sigma (as the paper's code draws it) before the momentum: the gradient of the loss averaged
  over translated copies of the image.

Transfer is judged on another model: craft on one with this attack and check with
:func:`advface.attacks.metrics.transfer_matrix`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from advface.attacks.base import goal_margin, goal_objective
from advface.attacks.pixel import (
    Batch,
    BatchOutcome,
    PixelAttack,
    check_positive,
    check_range,
    empty_best,
    in_box,
    keep_best,
    normalise,
    project,
    start_off_clean,
)
from advface.errors import AdvfaceError


def gaussian_kernel(size: int) -> np.ndarray:
    """The TI kernel: a normalised 2-D Gaussian over ``size`` pixels spanning +-3 sigma, ``(size, size)``."""
    t = np.linspace(-3.0, 3.0, size)
    k1 = np.exp(-0.5 * t**2)
    k = np.outer(k1, k1)
    return (k / k.sum()).astype(np.float32)


def _diverse(x, seed, probability):
    """DI: random shrink to ``r`` in ``[0.9 S, S]`` and pad back to ``S`` at a random offset, with
    probability ``probability`` (one draw per batch and step, as in the paper)."""
    size = x.shape[1]
    low = int(np.floor(0.9 * size))
    r = tf.random.stateless_uniform([], seed, low, size + 1, dtype=tf.int32)
    top = tf.random.stateless_uniform([], seed + 1, 0, size - r + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seed + 2, 0, size - r + 1, dtype=tf.int32)
    small = tf.image.resize(x, tf.stack([r, r]), method="bilinear")
    padded = tf.pad(small, [[0, 0], [top, size - r - top], [left, size - r - left], [0, 0]])
    padded = tf.ensure_shape(padded, x.shape)
    use = tf.random.stateless_uniform([], seed + 3) < probability
    return tf.where(use, padded, x)


class MIFGSM(PixelAttack):
    """Momentum iterative FGSM, optionally with input diversity (DI) and translation invariance (TI).

    Args:
        epsilon: budget in ``norm`` (default 8/255).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations (default 10).
        step_size: default ``epsilon / steps`` (the paper's).
        decay: momentum factor mu (default 1.0).
        diversity_prob: DI probability (0 turns DI off; the paper uses 0.5).
        ti_kernel: TI kernel size in pixels (0 or 1 turns TI off; the paper uses 15 at 299 px, about 7 at
            150 px).
        loss: ``"auto"``, ``"distance"``, ``"ce"``, ``"margin"`` or ``"dlr"``.
        batch_size: images attacked together.
    """

    name = "MI-FGSM"
    dynamic = ("epsilon", "step_size", "decay", "diversity_prob", "steps")

    def __init__(
        self,
        *,
        epsilon: float = 8 / 255,
        norm: str = "linf",
        steps: int = 10,
        step_size: float | None = None,
        decay: float = 1.0,
        diversity_prob: float = 0.0,
        ti_kernel: int = 0,
        loss: str = "auto",
        batch_size: int = 32,
    ):
        super().__init__(epsilon=epsilon, norm=norm, loss=loss, batch_size=batch_size)
        check_positive(steps=steps)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else self.epsilon / self.steps
        check_range("step_size", self.step_size, 1e-12, np.inf)
        check_range("decay", decay, 0.0, 10.0)
        check_range("diversity_prob", diversity_prob, 0.0, 1.0)
        if (
            ti_kernel is None
            or int(ti_kernel) != ti_kernel
            or ti_kernel < 0
            or (ti_kernel > 1 and ti_kernel % 2 == 0)
        ):
            raise AdvfaceError(
                f"`ti_kernel` must be 0 (off) or an odd number of pixels. Received: ti_kernel={ti_kernel!r}."
            )
        self.decay = float(decay)
        self.diversity_prob = float(diversity_prob)
        self.ti_kernel = int(ti_kernel)
        if self.diversity_prob > 0 or self.ti_kernel > 1:
            self.name = "MI-FGSM" + "".join(
                s for s, on in (("-DI", self.diversity_prob > 0), ("-TI", self.ti_kernel > 1)) if on
            )

    def planned_steps(self) -> int:
        return self.steps

    def _step_function(self, batch: Batch):
        keras_model = batch.model.keras_model
        kind, metric, norm, loss = batch.goal.kind, batch.goal.metric, self.norm, self.loss
        kernel = None
        if self.ti_kernel > 1:
            k = gaussian_kernel(self.ti_kernel)
            kernel = tf.constant(np.repeat(k[:, :, None, None], 3, axis=2))  # depthwise (k, k, 3, 1)
        diverse = self.diversity_prob > 0

        def build():
            @tf.function(reduce_retracing=True)
            def step(x, delta, momentum, best, t, mask, epsilon, step_size, decay, probability, seed):
                # 1. The gradient, through a random resize-and-pad (DI) when asked.
                with tf.GradientTape() as tape:
                    tape.watch(delta)
                    inputs = x + delta
                    if diverse:
                        inputs = _diverse(inputs, seed, probability)
                    outputs = keras_model(inputs, training=False)
                    objective = goal_objective(kind, metric, t, outputs, loss)
                    total = tf.reduce_sum(objective)
                grad = tape.gradient(total, delta) * mask
                # 2. TI: smooth the gradient with the Gaussian kernel.
                if kernel is not None:
                    grad = tf.nn.depthwise_conv2d(grad, kernel, [1, 1, 1, 1], "SAME")
                # 3. The undiversified point is what is judged and kept.
                if diverse:
                    plain = keras_model(x + delta, training=False)
                    objective = goal_objective(kind, metric, t, plain, loss)
                    margin = goal_margin(kind, metric, t, plain)
                else:
                    margin = goal_margin(kind, metric, t, outputs)
                best = keep_best(best, delta, objective, margin < 0)
                # 4. Momentum of L1-normalised gradients, then a sign (or L2) step.
                l1 = tf.reduce_mean(tf.abs(grad), axis=[1, 2, 3], keepdims=True)
                momentum = decay * momentum + grad / (l1 + 1e-12)
                delta = delta - step_size * normalise(momentum, norm)
                delta = in_box(x, project(delta * mask, epsilon, norm))
                return delta, momentum, best, objective, margin

            return step

        return self._compiled(batch, ("mifgsm", norm, loss, self.ti_kernel, diverse), build)

    def _attack_batch(self, batch: Batch) -> BatchOutcome:
        x, t, mask = batch.images, batch.goal.tensors, batch.mask
        step = self._step_function(batch)
        evaluate = self._evaluate_function(batch)
        epsilon = tf.constant(self.epsilon, tf.float32)
        constants = [tf.constant(v, tf.float32) for v in (self.step_size, self.decay, self.diversity_prob)]
        delta, extra = start_off_clean(batch)  # a hair off the clean image where the goal needs it
        momentum = tf.zeros_like(x)
        best = empty_best(x)
        for i in range(self.steps):
            seed = tf.constant([batch.seed, 1000 + 4 * i], tf.int32)
            delta, momentum, best, objective, margin = step(
                x, delta, momentum, best, t, mask, epsilon, *constants, seed
            )
            batch.step(objective.numpy(), margin.numpy() < 0)
        objective, margin = evaluate(x + delta, t)
        best = keep_best(best, delta, objective, margin < 0)
        b = int(x.shape[0])
        passes = 2 if self.diversity_prob > 0 else 1
        return BatchOutcome((x + best[0]).numpy(), np.full(b, self.steps), self.steps * passes + 1 + extra)
