"""Auto-PGD (APGD): PGD with momentum and a step size that adapts itself, in the L-infinity and L2 norms.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020 (Algorithm 1). Per image, with ``P`` the projection onto the budget (and the mask and
``[0, 1]``), ``f`` the objective advface minimises and ``dir`` the steepest-descent direction of unit norm
(the gradient's sign in Linf, ``g / ||g||_2`` in L2):

1. start at random in the ball (as PGD) with step size ``eta = 2 * epsilon``;
2. the first step has no momentum: ``x_1 = P(x_0 - eta * dir(x_0))``; afterwards
   ``z = P(x_k - eta * dir(x_k))`` and ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``;
3. at the checkpoints ``w_j = ceil(p_j * steps)`` (:func:`checkpoints`) the step size is halved when
   (1) fewer than ``rho * (w_j - w_{j-1})`` of the steps since the last checkpoint lowered the objective,
   or (2) it was not halved at the last checkpoint and the best objective has not improved since; a
   halved image goes on from its best point so far (with no momentum on that step).

The paper maximises a loss; advface minimises :func:`~advface.attacks.base.goal_objective`, so its "loss
increased" is "objective decreased" here. ``loss="ce"`` is APGD-CE and ``loss="dlr"`` APGD-DLR (for
``TargetClass`` the targeted DLR loss, APGD-DLR-T's); for 1:1 goals DLR is the margin over the threshold,
invariant like DLR to a rescaling of the model's outputs.

Everything is per image (step size, counters, best point) and vectorised over the batch; one step is one
compiled ``tf.function`` (forward and backward pass, bookkeeping, checkpoint decision and update). The
checkpoint decision at iterate ``w_j`` uses the comparisons ``f(x_{i+1}) < f(x_i)`` for ``i`` in
``[w_{j-1}, w_j)``, the paper's window, and restarts that iterate itself from the best point.
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
)
from advface.errors import AdvfaceError


def checkpoints(steps: int) -> tuple[int, ...]:
    """The iterations ``w_j = ceil(p_j * steps)`` where APGD may halve its step size.

    ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` while ``p_j <= 1``;
    computed in hundredths so that no rounding error moves a checkpoint. For 100 steps:
    ``(0, 22, 41, 57, 70, 80, 87, 93, 99)``. Repeated values (few steps) appear once.
    """
    check_positive(steps=steps)
    percent = [0, 22]
    while True:
        following = percent[-1] + max(percent[-1] - percent[-2] - 3, 6)
        if following > 100:
            break
        percent.append(following)
    return tuple(sorted({-(-p * steps // 100) for p in percent}))


def _fresh_state(x, epsilon) -> dict:
    """APGD's per-image bookkeeping for one restart, ``(B,)`` tensors unless said otherwise.

    ``eta``: step size; ``last_objective``: objective at the previous iterate; ``count``: steps since the
    last checkpoint that lowered the objective; ``best_delta``, ``best_grad`` ``(B, S, S, 3)`` and
    ``best_objective``: the lowest-objective iterate, its gradient and objective (the paper's ``x_max``,
    where a halved image goes on from); ``best_at_checkpoint``: ``best_objective`` at the last checkpoint;
    ``halved``: whether the step size was halved at the last checkpoint.
    """
    b = tf.shape(x)[0]
    inf = tf.fill([b], np.float32(np.inf))
    return {
        "eta": tf.fill([b], 2.0 * tf.cast(epsilon, tf.float32)),
        "last_objective": inf,
        "count": tf.zeros([b], tf.float32),
        "best_delta": tf.zeros_like(x),
        "best_grad": tf.zeros_like(x),
        "best_objective": inf,
        "best_at_checkpoint": inf,
        "halved": tf.zeros([b], tf.bool),
    }


class APGD(PixelAttack):
    """Auto-PGD: momentum and a self-adapting step size, per image (Croce & Hein, ICML 2020).

    Args:
        epsilon: budget in ``norm`` (default 8/255).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart (the paper's ``N_iter``).
        restarts: independent runs from new random starts; the best iterate of all is kept.
        loss: ``"auto"`` (distance for 1:1 goals, cross-entropy otherwise), ``"distance"``, ``"ce"``
            (APGD-CE), ``"margin"`` or ``"dlr"`` (APGD-DLR; targeted DLR for ``TargetClass``).
        rho: the share of successful steps below which the step size is halved at a checkpoint.
        momentum: the paper's ``alpha``, the weight of the new step against the last one (1: no momentum).
        batch_size: images attacked together.

    The result keeps, per image, the best iterate: successful first, then lowest objective.

    Example:
        >>> attack = APGD(epsilon=4 / 255, steps=100)
        >>> result = attack(model, chips, Dodge(model.embed(chips), paired=True), seed=0)
    """

    name = "APGD"
    dynamic = ("epsilon", "steps", "restarts", "rho", "momentum")

    def __init__(
        self,
        *,
        epsilon: float = 8 / 255,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        loss: str = "auto",
        rho: float = 0.75,
        momentum: float = 0.75,
        batch_size: int = 32,
    ):
        super().__init__(epsilon=epsilon, norm=norm, loss=loss, batch_size=batch_size)
        check_positive(steps=steps, restarts=restarts)
        check_range("rho", rho, 0.0, 1.0)
        if momentum is None or not (np.isfinite(momentum) and 0.0 < momentum <= 1.0):
            raise AdvfaceError(f"`momentum` must be in (0, 1] (1: none). Received: momentum={momentum!r}.")
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.rho = float(rho)
        self.momentum = float(momentum)

    def planned_steps(self) -> int:
        return self.steps * self.restarts

    def _step_function(self, batch: Batch):
        keras_model = batch.model.keras_model
        kind, metric, norm, loss = batch.goal.kind, batch.goal.metric, self.norm, self.loss

        def build():
            @tf.function(reduce_retracing=True)
            def step(
                x, delta, last_delta, state, best, t, mask, epsilon, alpha, rho, first, checkpoint, window
            ):
                s = dict(state)
                # 1. Objective, margin and gradient at the current iterate x_k.
                with tf.GradientTape() as tape:
                    tape.watch(delta)
                    outputs = keras_model(x + delta, training=False)
                    objective = goal_objective(kind, metric, t, outputs, loss)
                    total = tf.reduce_sum(objective)
                grad = tape.gradient(total, delta) * mask
                margin = goal_margin(kind, metric, t, outputs)
                # 2. The result's best (successful first) and the optimiser's (lowest objective).
                best = keep_best(best, delta, objective, margin < 0)
                s["count"] += tf.cast((objective < s["last_objective"]) & ~first, tf.float32)
                lower = objective < s["best_objective"]
                s["best_delta"] = tf.where(lower[:, None, None, None], delta, s["best_delta"])
                s["best_grad"] = tf.where(lower[:, None, None, None], grad, s["best_grad"])
                s["best_objective"] = tf.where(lower, objective, s["best_objective"])
                # 3. At a checkpoint: halve the step size on condition 1 or 2, going on from the best point.
                too_few = s["count"] < rho * window
                stalled = ~s["halved"] & (s["best_objective"] >= s["best_at_checkpoint"])
                halve = checkpoint & ~first & (too_few | stalled)
                back = halve[:, None, None, None]
                s["eta"] = tf.where(halve, 0.5 * s["eta"], s["eta"])
                delta = tf.where(back, s["best_delta"], delta)
                grad = tf.where(back, s["best_grad"], grad)
                last_delta = tf.where(back, s["best_delta"], last_delta)
                s["last_objective"] = tf.where(halve, s["best_objective"], objective)
                s["count"] = tf.where(checkpoint, tf.zeros_like(s["count"]), s["count"])
                s["best_at_checkpoint"] = tf.where(checkpoint, s["best_objective"], s["best_at_checkpoint"])
                s["halved"] = tf.where(checkpoint, halve, s["halved"])
                # 4. The step: plain on the first iteration, with momentum afterwards.
                eta = s["eta"][:, None, None, None]
                z = in_box(x, project((delta - eta * normalise(grad, norm)) * mask, epsilon, norm))
                moved = delta + alpha * (z - delta) + (1.0 - alpha) * (delta - last_delta)
                moved = in_box(x, project(moved * mask, epsilon, norm))
                return tf.where(first, z, moved), delta, s, best, objective, margin

            return step

        return self._compiled(batch, ("apgd", norm, loss), build)

    def _attack_batch(self, batch: Batch) -> BatchOutcome:
        x, t, mask = batch.images, batch.goal.tensors, batch.mask
        step = self._step_function(batch)
        evaluate = self._evaluate_function(batch)
        epsilon = tf.constant(self.epsilon, tf.float32)
        alpha = tf.constant(self.momentum, tf.float32)
        rho = tf.constant(self.rho, tf.float32)
        marks = checkpoints(self.steps)
        windows = dict(zip(marks[1:], np.diff(marks), strict=True))
        b = int(x.shape[0])
        best = empty_best(x)
        for restart in range(self.restarts):
            # 1. A random start in the ball, a fresh step size and fresh counters.
            delta = in_box(x, random_start(tf.shape(x), epsilon, self.norm, [batch.seed, restart]) * mask)
            last_delta = delta
            state = _fresh_state(x, epsilon)
            # 2. Steps, each one compiled call, each reported.
            for k in range(self.steps):
                delta, last_delta, state, best, objective, margin = step(
                    x,
                    delta,
                    last_delta,
                    state,
                    best,
                    t,
                    mask,
                    epsilon,
                    alpha,
                    rho,
                    tf.constant(k == 0),
                    tf.constant(k in windows or k == 0),
                    tf.constant(float(windows.get(k, 0)), tf.float32),
                )
                batch.step(objective.numpy(), margin.numpy() < 0)
            # 3. The last iterate counts too.
            objective, margin = evaluate(x + delta, t)
            best = keep_best(best, delta, objective, margin < 0)
        adversarial = (x + best[0]).numpy()
        steps = np.full(b, self.steps * self.restarts)
        return BatchOutcome(adversarial, steps, steps + self.restarts)
