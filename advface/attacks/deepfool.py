"""DeepFool: walk to the model's linearised decision boundary until the goal is met (L2).

Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool deep neural networks"
(CVPR 2016). Each step linearises the model at the current image ``x + (1 + overshoot) r`` and takes the
smallest L2 step that reaches the linearised boundary; the steps add up to ``r``. On an affine model one
step lands on the boundary exactly, so the result is the minimal perturbation times ``1 + overshoot``. On
a deep model, as in the authors' code, the overshoot beyond the true boundary is about that of the last
step: dodging dlib-resnet ends some 1e-4 past the threshold, which rounding to 8 bits usually undoes
(``success_8bit``); a larger ``overshoot`` buys margin.

- Binary form (Algorithm 1), for goals with one boundary: ``Dodge``, ``Impersonate`` and ``TargetClass``,
  on :func:`~advface.attacks.base.goal_margin` ``m`` (negative = met): ``r_i = -m / ||grad m||^2 grad m``.
- Multi-class form (Algorithm 2), for dodging a class: ``Misclassify`` on the classifier's logits and
  ``Misidentify`` on identity logits (``-scale * distance`` to each enrolled identity). Over the
  ``candidates`` classes ranked highest on the clean image (the true class excluded), with
  ``f_j = z_j - z_y`` and ``w_j = grad f_j``, the step goes to the nearest linearised boundary
  ``l = argmin |f_j| / ||w_j||``: ``r_i = (|f_l| + 1e-4) / ||w_l||^2 w_l``. For an open-set gallery the
  rejection boundary (own distance above the threshold) is one more candidate.

An image stops as soon as it meets the goal; the attack stops when all have (so progress may be reported
fewer times than planned). Images that never do return the last iterate. With a ``mask`` the gradients are
multiplied by it: the linearisation, and the step, live in the masked pixels. Classifier ``probability``
requirements are not part of the margin: DeepFool stops at the boundary, where they are rarely met.
Dodging, and misidentifying a probe the gallery holds, start a hair off the clean image (``start_off_clean``).
``queries`` counts forward passes (one per step, its backward passes included, plus the start's).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from advface.attacks.base import FAR, goal_logits, goal_margin
from advface.attacks.pixel import (
    Batch,
    BatchOutcome,
    PixelAttack,
    check_positive,
    check_range,
    start_off_clean,
)

_MULTICLASS = ("misclassify", "misidentify")


class DeepFool(PixelAttack):
    """DeepFool in L2, binary or multi-class by goal (see the module docstring).

    Args:
        epsilon: optional L2 cap; ``None`` (the default) for the unbounded minimal-perturbation attack.
        norm: ``"l2"`` (the only norm of this attack).
        steps: linearisation steps at most.
        overshoot: the summed step is scaled by ``1 + overshoot`` to land past the boundary.
        candidates: classes (identities) the multi-class form considers besides the true one: the
            highest-ranked on the clean image, or all when there are fewer.
        batch_size: images attacked together.

    Example:
        >>> attack = DeepFool(steps=50)
        >>> result = attack(model, chips, Dodge(model.embed(chips), paired=True), seed=0)
        >>> np.median(result.l2[result.success])
    """

    name = "DeepFool"
    supported_norms = ("l2",)
    needs_epsilon = False

    def __init__(
        self,
        *,
        epsilon: float | None = None,
        norm: str = "l2",
        steps: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        batch_size: int = 32,
    ):
        super().__init__(epsilon=epsilon, norm=norm, loss="margin", batch_size=batch_size)
        check_positive(steps=steps, candidates=candidates)
        check_range("overshoot", overshoot, 0.0, 1.0)
        self.steps = int(steps)
        self.overshoot = float(overshoot)
        self.candidates = int(candidates)

    def planned_steps(self) -> int:
        return self.steps

    def _step_function(self, batch: Batch, k: int):
        keras_model = batch.model.keras_model
        kind, metric = batch.goal.kind, batch.goal.metric

        def build():
            @tf.function(reduce_retracing=True)
            def binary(x_adv, t, mask, classes):
                # 1. Margin and its gradient at the current image.
                with tf.GradientTape() as tape:
                    tape.watch(x_adv)
                    margin = goal_margin(kind, metric, t, keras_model(x_adv, training=False))
                    total = tf.reduce_sum(margin)
                grad = tape.gradient(total, x_adv) * mask
                # 2. The smallest step to the linearised boundary m + <grad, r> = 0.
                return margin, -(margin / _squared_norm(grad))[:, None, None, None] * grad

            @tf.function(reduce_retracing=True)
            def multiclass(x_adv, t, mask, classes):
                # 1. f_j = z_j - z_y for each candidate class j (and the open-set rejection boundary).
                with tf.GradientTape(persistent=True) as tape:
                    tape.watch(x_adv)
                    outputs = keras_model(x_adv, training=False)
                    z, labels = goal_logits(kind, metric, t, outputs)
                    own = tf.gather(z, labels, axis=1, batch_dims=1)
                    f = [tf.gather(z, classes[:, j], axis=1, batch_dims=1) - own for j in range(k)]
                    if kind == "misidentify":
                        f.append(-own - t["scale"] * t["threshold"])  # > 0: d_own > threshold
                    totals = [tf.reduce_sum(f_j) for f_j in f]
                margin = goal_margin(kind, metric, t, outputs)
                # 2. The nearest linearised boundary: l = argmin |f_j| / ||w_j||.
                best_f = best_norm = tf.ones_like(margin)
                best_ratio = tf.fill(tf.shape(margin), np.float32(np.inf))
                best_w = tf.zeros_like(x_adv)
                for j, (f_j, total) in enumerate(zip(f, totals, strict=True)):
                    w_j = tape.gradient(total, x_adv) * mask
                    norm_j = _squared_norm(w_j)
                    ratio = tf.abs(f_j) / tf.sqrt(norm_j)
                    if j == len(f) - 1 and kind == "misidentify":
                        ratio = tf.where(t["open_set"] > 0, ratio, np.float32(np.inf))
                    pick = ratio < best_ratio
                    best_ratio = tf.where(pick, ratio, best_ratio)
                    best_f = tf.where(pick, f_j, best_f)
                    best_norm = tf.where(pick, norm_j, best_norm)
                    best_w = tf.where(pick[:, None, None, None], w_j, best_w)
                del tape
                # 3. The step onto it, a hair past (DeepFool's 1e-4).
                return margin, ((tf.abs(best_f) + 1e-4) / best_norm)[:, None, None, None] * best_w

            return multiclass if kind in _MULTICLASS else binary

        return self._compiled(batch, ("deepfool", k), build)

    def _candidates(self, batch: Batch) -> tf.Tensor:
        """``(B, K)`` int32: the classes ranked highest on the clean images, the true class excluded."""
        if batch.goal.kind not in _MULTICLASS:
            return tf.zeros([int(batch.images.shape[0]), 0], tf.int32)
        outputs = batch.model.keras_model(batch.images, training=False)
        z, labels = goal_logits(batch.goal.kind, batch.goal.metric, batch.goal.tensors, outputs)
        k = min(self.candidates, int(z.shape[1]) - 1)
        others = z - tf.one_hot(labels, tf.shape(z)[1], dtype=z.dtype) * FAR
        return tf.math.top_k(others, k=k).indices

    def _attack_batch(self, batch: Batch) -> BatchOutcome:
        x, t, mask = batch.images, batch.goal.tensors, batch.mask
        classes = self._candidates(batch)
        step = self._step_function(batch, int(classes.shape[1]))
        scale = np.float32(1.0 + self.overshoot)
        # 1. Start at the clean image, or a hair off it (see start_off_clean).
        r_total, queries = start_off_clean(batch)
        queries += int(classes.shape[1] > 0)  # the forward pass that ranked the candidates
        running = np.ones(len(queries), bool)
        steps = np.zeros(len(queries), np.int64)
        for _ in range(self.steps):
            # 2. Linearise at the overshot image; images that meet the goal stop there.
            margin, r = step(tf.clip_by_value(x + scale * r_total, 0.0, 1.0), t, mask, classes)
            margin = margin.numpy()
            batch.step(margin, margin < 0)
            queries += running
            running &= margin >= 0
            steps += running
            if not running.any():
                break
            # 3. Add the step on the images still running.
            r_total = r_total + tf.where(tf.constant(running)[:, None, None, None], r, 0.0)
        adversarial = tf.clip_by_value(x + scale * r_total, 0.0, 1.0).numpy()
        return BatchOutcome(adversarial, steps, queries)


def _squared_norm(g):
    """``(B,)`` squared L2 norms, kept away from zero (a zero gradient then gives a zero step)."""
    return tf.maximum(tf.reduce_sum(g**2, axis=[1, 2, 3]), 1e-24)
