"""Square Attack: a score-based black-box attack by random search, in the L-infinity and L2 norms.

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box adversarial attack
via random search", ECCV 2020. It never looks at a gradient, only at the model's outputs: per image,

1. query the clean image; an image that already meets the goal is left as it is;
2. start at a fixed-size perturbation: vertical stripes of width one, each column and colour channel
   ``+epsilon`` or ``-epsilon`` at random (Linf), or a 5 x 5 grid of "meta-pixels", tiles holding the
   centred pattern of the paper's eq. (2) with a random sign per channel, scaled to L2 norm ``epsilon``;
3. each iteration, propose a change inside a random square of side ``h`` (``h^2`` about ``p`` times the
   image's area) and keep it if it lowers the objective (the margin: :func:`~advface.attacks.base.goal_margin`
   unless ``loss`` says otherwise). Linf: the square takes a random colour in ``{-epsilon, +epsilon}^3``,
   so the perturbation stays on the vertices of the box. L2: the perturbation in a second random square
   is moved into the first, mixed with the paper's two-bump pattern of random sign per channel, and the
   unused budget is added, so the norm stays exactly ``epsilon`` (before clipping to ``[0, 1]``);
4. stop on an image once it meets the goal (margin below 0), on all of them once all do.

``p`` starts at ``p_init`` and is halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of
the paper's 10,000-query schedule, rescaled to ``queries``. A proposal that would not change the image
(Linf: the square already has the drawn colour) takes the opposite colour instead, so no query is wasted.

With a ``mask``, proposals are multiplied by it, so only masked pixels change; the squares are drawn over
the whole image regardless, so a square outside the mask costs a query and changes nothing.

Proposals are drawn with numpy (``default_rng(seed)``) and built for the whole batch at once; the model is
queried on the images still running, in one compiled forward pass per iteration.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from advface.attacks.base import goal_margin, goal_objective
from advface.attacks.pixel import Batch, BatchOutcome, PixelAttack, check_positive
from advface.errors import AdvfaceError

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # iterations of the paper's 10,000 queries
_PER_IMAGE = ("select", "labels")  # GoalTensors entries with one row per image


class Square(PixelAttack):
    """Square Attack, score-based black box (Andriushchenko et al., ECCV 2020).

    Args:
        epsilon: budget in ``norm`` (default 8/255).
        norm: ``"linf"`` or ``"l2"``.
        queries: the most forward passes spent on each image: one on the clean image, one on the start,
            one per iteration (so ``queries - 2`` iterations at most).
        p_init: the first squares' share of the image's area, in ``(0, 1]``.
        loss: what a proposal must lower to be kept: ``"margin"`` (the paper's untargeted loss) or any of
            :data:`~advface.attacks.base.LOSSES`. Success is always judged by the margin.
        batch_size: images attacked together.

    Results report ``queries`` per image (forward passes actually spent; an image stops when it meets the
    goal) and ``steps`` (its iterations).

    Example:
        >>> attack = Square(epsilon=8 / 255, queries=1000)
        >>> result = attack(model, chips, Dodge(model.embed(chips), paired=True), seed=0)
    """

    name = "Square"
    dynamic = ("epsilon", "norm", "queries", "p_init")  # the compiled forward pass depends on the loss only

    def __init__(
        self,
        *,
        epsilon: float = 8 / 255,
        norm: str = "linf",
        queries: int = 1000,
        p_init: float = 0.8,
        loss: str = "margin",
        batch_size: int = 32,
    ):
        super().__init__(epsilon=epsilon, norm=norm, loss=loss, batch_size=batch_size)
        check_positive(queries=queries)
        if queries < 3:
            raise AdvfaceError(
                "Square needs at least 3 queries (the clean image, the start, one iteration). "
                f"Received: queries={queries!r}."
            )
        if p_init is None or not (np.isfinite(p_init) and 0.0 < p_init <= 1.0):
            raise AdvfaceError(f"`p_init` must be in (0, 1]. Received: p_init={p_init!r}.")
        self.queries = int(queries)
        self.p_init = float(p_init)

    def planned_steps(self) -> int:
        return self.queries - 2

    def side(self, iteration: int, size: int) -> int:
        """The square's side at ``iteration`` (0-based) for ``size`` x ``size`` chips."""
        scaled = iteration * 10_000 / self.queries
        p = self.p_init * 0.5 ** sum(scaled > mark for mark in _HALVINGS)
        return int(np.clip(round(np.sqrt(p * size * size)), 1, size))

    def _forward_function(self, batch: Batch):
        """``f(images (M, S, S, 3), index (M,), goal_tensors) -> (objective (M,), margin (M,))`` for the
        batch's images ``index``: the images still being attacked."""
        keras_model = batch.model.keras_model
        kind, metric, loss = batch.goal.kind, batch.goal.metric, self.loss

        def build():
            @tf.function(reduce_retracing=True)
            def forward(images, index, t):
                t = {k: tf.gather(v, index) if k in _PER_IMAGE else v for k, v in t.items()}
                outputs = keras_model(images, training=False)
                return goal_objective(kind, metric, t, outputs, loss), goal_margin(kind, metric, t, outputs)

            return forward

        return self._compiled(batch, ("square", loss), build)

    def _attack_batch(self, batch: Batch) -> BatchOutcome:
        x, mask = batch.images.numpy(), batch.mask.numpy()
        forward = self._forward_function(batch)
        rng = np.random.default_rng(batch.seed)
        b, size = x.shape[0], x.shape[1]
        queries = np.zeros(b, np.int64)
        steps = np.zeros(b, np.int64)

        def query(images, index):
            queries[index] += 1
            objective, margin = forward(tf.constant(images), tf.constant(index, tf.int32), batch.goal.tensors)
            return objective.numpy(), margin.numpy()

        # 1. The clean images: those already meeting the goal are done.
        objective, margin = query(x, np.arange(b))
        adversarial = x.copy()
        running = np.flatnonzero(margin >= 0)

        # 2. The start: stripes (Linf) or meta-pixels (L2), for the images still running.
        if self.norm == "linf":
            state = _stripes(rng, x.shape)  # the perturbation's signs
        else:
            state = _meta_pixels(rng, x.shape, self.epsilon, mask)  # the perturbation itself
        if len(running):
            adversarial[running], state[running] = self._apply(x[running], state[running], mask[running])
            objective[running], margin[running] = query(adversarial[running], running)

        # 3. Random search, one reported step per iteration, until every image meets the goal.
        for i in range(self.planned_steps()):
            running = np.flatnonzero(margin >= 0)
            if not len(running):
                break
            h = self.side(i, size)
            if self.norm == "linf":
                proposal = _linf_proposal(rng, state[running], h)
            else:
                proposal = _l2_proposal(rng, state[running], h, self.epsilon)
            images, proposal = self._apply(x[running], proposal, mask[running])
            new_objective, new_margin = query(images, running)
            steps[running] += 1
            keep = new_objective < objective[running]
            kept = running[keep]
            adversarial[kept], state[kept] = images[keep], proposal[keep]
            objective[kept], margin[kept] = new_objective[keep], new_margin[keep]
            batch.step(objective, margin < 0)
        return BatchOutcome(adversarial, steps, queries)

    def _apply(self, x, state, mask):
        """The images of a state (Linf: signs, kept as they are; L2: the perturbation, clipped to the
        mask and ``[0, 1]`` as the paper's ``x_hat - x``)."""
        if self.norm == "linf":
            return np.clip(x + self.epsilon * state * mask, 0.0, 1.0).astype(np.float32), state
        images = np.clip(x + state * mask, 0.0, 1.0).astype(np.float32)
        return images, images - x


def _square_index(rng, b: int, size: int, h: int):
    """Fancy indices of one random ``h`` x ``h`` square per image: ``array[index]`` is ``(B, h, h, C)``."""
    rows = rng.integers(0, size - h + 1, b)[:, None] + np.arange(h)
    cols = rng.integers(0, size - h + 1, b)[:, None] + np.arange(h)
    return np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]


def _stripes(rng, shape) -> np.ndarray:
    """Linf start: vertical stripes of width one, each column and channel of random sign."""
    b, height, width, c = shape
    signs = rng.choice(np.float32([-1.0, 1.0]), size=(b, 1, width, c))
    return np.ascontiguousarray(np.broadcast_to(signs, shape))


def _linf_proposal(rng, signs, h: int) -> np.ndarray:
    """A random square of a random colour in ``{-1, +1}^C``; a colour the square already has everywhere
    is replaced by its opposite, so every proposal changes the image."""
    b, size, _, c = signs.shape
    index = _square_index(rng, b, size, h)
    colour = rng.choice(np.float32([-1.0, 1.0]), size=(b, 1, 1, c))
    unchanged = np.all(signs[index] == colour, axis=(1, 2, 3))
    colour[unchanged] *= -1.0
    proposal = signs.copy()
    proposal[index] = colour
    return proposal


def _centred(h1: int, h2: int) -> np.ndarray:
    """The paper's eq. (2): an ``h1`` x ``h2`` pattern of nested squares peaking at the centre,
    ``eta[r, s] = sum_{k=0}^{M(r, s)} 1 / (n + 1 - k)^2`` with ``n = h1 // 2`` and
    ``M(r, s) = n - max(|r - h1 // 2 - 1|, |s - h2 // 2 - 1|)`` (1-based ``r``, ``s``)."""
    n = h1 // 2
    r = np.arange(1, h1 + 1)[:, None]
    s = np.arange(1, h2 + 1)[None, :]
    depth = n - np.maximum(np.abs(r - h1 // 2 - 1), np.abs(s - h2 // 2 - 1))
    sums = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(n + 1, 0, -1) ** 2)])  # sums[m + 1]: k <= m
    return sums[np.clip(depth + 1, 0, None)]


def _two_bumps(h: int) -> np.ndarray:
    """The L2 update's ``h`` x ``h`` pattern of unit norm: a positive and a negative centred half."""
    k = h // 2
    eta = np.concatenate([_centred(h, k), -_centred(h, h - k)], axis=1)
    return eta / np.sqrt((eta**2).sum())


def _meta_pixels(rng, shape, epsilon: float, mask) -> np.ndarray:
    """L2 start: a 5 x 5 grid of tiles, each the centred pattern with a random sign per channel, masked and
    scaled to norm ``epsilon``."""
    b, size, _, c = shape
    tile = max(size // 5, 1)
    count = min(5, size // tile)
    offset = (size - count * tile) // 2
    bump = _centred(tile, tile)
    delta = np.zeros(shape, np.float32)
    for i in range(count):
        for j in range(count):
            top, left = offset + i * tile, offset + j * tile
            signs = rng.choice(np.float32([-1.0, 1.0]), size=(b, 1, 1, c))
            delta[:, top : top + tile, left : left + tile] = bump[None, :, :, None] * signs
    delta *= mask
    norms = np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True))
    return (delta * epsilon / np.maximum(norms, 1e-12)).astype(np.float32)


def _l2_proposal(rng, nu, h: int, epsilon: float) -> np.ndarray:
    """The paper's L2 update of the perturbation ``nu`` ``(B, S, S, C)`` (``x_hat - x``).

    Per image and channel: the mass in two random squares ``W1`` and ``W2`` plus an even share of the
    unused budget moves into ``W1``, as ``W1``'s old content (unit norm) plus the two-bump pattern of
    random sign (unit norm), scaled to that mass; ``W2`` is emptied. The total norm becomes ``epsilon``.
    """
    b, size, _, c = nu.shape
    first, second = _square_index(rng, b, size, h), _square_index(rng, b, size, h)
    unused = np.maximum(epsilon**2 - (nu**2).sum(axis=(1, 2, 3)), 0.0)  # (B,)
    union = np.zeros((b, size, size, 1), np.float32)
    union[first] = 1.0
    union[second] = 1.0
    available = np.sqrt(((nu * union) ** 2).sum(axis=(1, 2)) + unused[:, None] / c)  # (B, C)
    bumps = _two_bumps(h)
    turned = rng.random(b) < 0.5  # the paper's random 90-degree turn (a transpose: same pair of bumps)
    pattern = np.where(turned[:, None, None], bumps.T[None], bumps[None])[..., None]  # (B, h, h, 1)
    sign = rng.choice(np.float32([-1.0, 1.0]), size=(b, 1, 1, c))
    old = nu[first]
    old = old / np.maximum(np.sqrt((old**2).sum(axis=(1, 2), keepdims=True)), 1e-12)
    new = sign * pattern + old
    new = new / np.maximum(np.sqrt((new**2).sum(axis=(1, 2), keepdims=True)), 1e-12)
    proposal = nu.copy()
    proposal[second] = 0.0
    proposal[first] = (new * available[:, None, None, :]).astype(np.float32)
    return proposal
