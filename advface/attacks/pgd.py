"""Gradient-sign attacks: FGSM, BIM and PGD, in the L-infinity and L2 norms.

- FGSM (Goodfellow, Shlens, Szegedy, ICLR 2015): one step of size epsilon along the gradient's sign (L2:
  the normalised gradient).

FGSM and BIM take their first gradient a hair off the clean image when the goal needs it (dodging or
misidentifying a face against its own embedding, see ``pixel.start_off_clean``): there the distance is at
its minimum and has no gradient.
- BIM / I-FGSM (Kurakin, Goodfellow, Bengio, 2017): iterated small steps from the clean image, projected
  back into the epsilon ball after each.
- PGD (Madry et al., ICLR 2018): BIM from a uniformly random start in the ball, with restarts; the
  most adversarial iterate of all restarts is kept per image (successful first, then lowest objective),
  and the last iterate of each restart is evaluated too (the semantic source never tested it).

CertRobFR's PGD (L2, no random start, ``alpha = 1.25 eps / steps``) is ``BIM(norm="l2")``; the siamese
notebook's FGSM is ``FGSM``. One step is one gradient: a compiled ``tf.function`` doing the forward and
backward pass, the update, the projection and the best-iterate bookkeeping for the whole batch.
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
    random_start,
    start_off_clean,
)


class PGD(PixelAttack):
    """Projected gradient descent on the goal's objective.

    Args:
        epsilon: budget in ``norm`` (default 8/255).
        norm: ``"linf"`` or ``"l2"``.
        steps: gradient steps per restart.
        step_size: step length in ``norm``; default ``2.5 * epsilon / steps`` (Madry et al.).
        random_start: start uniformly at random in the ball (else at the clean image).
        restarts: independent runs; the best iterate over all of them is kept.
        loss: ``"auto"``, ``"distance"``, ``"ce"``, ``"margin"`` or ``"dlr"`` (advface.attacks.base).
        batch_size: images attacked together.

    Example:
        >>> attack = PGD(epsilon=4 / 255, steps=20)
        >>> result = attack(model, chips, Dodge(model.embed(chips), paired=True), seed=0)
    """

    name = "PGD"
    dynamic = ("epsilon", "step_size", "steps", "restarts", "random_start")

    def __init__(
        self,
        *,
        epsilon: float = 8 / 255,
        norm: str = "linf",
        steps: int = 40,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "auto",
        batch_size: int = 32,
    ):
        super().__init__(epsilon=epsilon, norm=norm, loss=loss, batch_size=batch_size)
        check_positive(steps=steps, restarts=restarts)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.epsilon / self.steps
        check_range("step_size", self.step_size, 1e-12, np.inf)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)

    def planned_steps(self) -> int:
        return self.steps * self.restarts

    def _step_function(self, batch: Batch):
        keras_model = batch.model.keras_model
        kind, metric, norm, loss = batch.goal.kind, batch.goal.metric, self.norm, self.loss

        def build():
            @tf.function(reduce_retracing=True)
            def step(x, delta, best, t, mask, epsilon, step_size):
                # 1. Objective, margin and gradient at the current iterate.
                with tf.GradientTape() as tape:
                    tape.watch(delta)
                    outputs = keras_model(x + delta, training=False)
                    objective = goal_objective(kind, metric, t, outputs, loss)
                    total = tf.reduce_sum(objective)
                grad = tape.gradient(total, delta)
                margin = goal_margin(kind, metric, t, outputs)
                # 2. Keep it if it is the best so far.
                best = keep_best(best, delta, objective, margin < 0)
                # 3. Descend, project onto the ball (and the mask), stay in [0, 1].
                delta = delta - step_size * normalise(grad * mask, norm)
                delta = in_box(x, project(delta * mask, epsilon, norm))
                return delta, best, objective, margin

            return step

        return self._compiled(batch, ("pgd", norm, loss), build)

    def _attack_batch(self, batch: Batch) -> BatchOutcome:
        x, t, mask = batch.images, batch.goal.tensors, batch.mask
        step = self._step_function(batch)
        evaluate = self._evaluate_function(batch)
        epsilon = tf.constant(self.epsilon, tf.float32)
        step_size = tf.constant(self.step_size, tf.float32)
        b = int(x.shape[0])
        best = empty_best(x)
        offset, extra = start_off_clean(batch) if not self.random_start else (None, 0)
        for restart in range(self.restarts):
            # 1. Start uniformly in the ball, or at the clean image (a hair off it: start_off_clean).
            if self.random_start:
                delta = random_start(tf.shape(x), epsilon, self.norm, [batch.seed, restart])
                delta = in_box(x, delta * mask)
            else:
                delta = offset
            # 2. Steps, each reported.
            for _ in range(self.steps):
                delta, best, objective, margin = step(x, delta, best, t, mask, epsilon, step_size)
                batch.step(objective.numpy(), margin.numpy() < 0)
            # 3. The last iterate counts too.
            objective, margin = evaluate(x + delta, t)
            best = keep_best(best, delta, objective, margin < 0)
        adversarial = (x + best[0]).numpy()
        steps = np.full(b, self.steps * self.restarts)
        return BatchOutcome(adversarial, steps, steps + self.restarts + extra)


class BIM(PGD):
    """Basic iterative method / I-FGSM: PGD from the clean image with ``step_size = 1.25 eps / steps``
    (Kurakin et al. 2017; CertRobFR's PGD in L2)."""

    name = "BIM"

    def __init__(
        self,
        *,
        epsilon: float = 8 / 255,
        norm: str = "linf",
        steps: int = 10,
        step_size: float | None = None,
        loss: str = "auto",
        batch_size: int = 32,
    ):
        check_positive(steps=steps)
        super().__init__(
            epsilon=epsilon,
            norm=norm,
            steps=steps,
            step_size=step_size if step_size is not None else 1.25 * epsilon / steps,
            random_start=False,
            restarts=1,
            loss=loss,
            batch_size=batch_size,
        )


class FGSM(PGD):
    """Fast gradient sign method: one step of size ``epsilon`` from the clean image (Goodfellow et al.
    2015). In L2 the step is the gradient scaled to length ``epsilon`` (the fast gradient method)."""

    name = "FGSM"

    def __init__(
        self, *, epsilon: float = 8 / 255, norm: str = "linf", loss: str = "auto", batch_size: int = 32
    ):
        super().__init__(
            epsilon=epsilon,
            norm=norm,
            steps=1,
            step_size=epsilon,
            random_start=False,
            restarts=1,
            loss=loss,
            batch_size=batch_size,
        )

    def _attack_batch(self, batch: Batch) -> BatchOutcome:
        # The step itself, not the better of clean and stepped: FGSM returns its one step.
        x, t, mask = batch.images, batch.goal.tensors, batch.mask
        gradient = self._gradient_function(batch)
        offset, extra = start_off_clean(batch)
        objective, margin, grad = gradient(x + offset, t)
        batch.step(objective.numpy(), margin.numpy() < 0)
        delta = in_box(
            x, project(self.epsilon * normalise(-grad * mask, self.norm) * mask, self.epsilon, self.norm)
        )
        b = int(x.shape[0])
        return BatchOutcome((x + delta).numpy(), np.ones(b, np.int64), 1 + extra)
