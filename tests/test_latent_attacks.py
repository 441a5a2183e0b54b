"""Latent PGD and FAB-t: against the analytic answer on affine objectives, where the smallest M-norm
perturbation is known, and the contract both keep (the budget, success from a fresh forward pass, seeds
independent of batching, progress once per step, Cancelled).

An affine objective has logits ``c_row + G delta``. The smallest ``||delta||_M`` making class ``t`` beat the
label ``y`` is ``|f0| / sqrt(g^T M^-1 g)`` with ``f0 = c_t - c_y`` and ``g = G_t - G_y`` (the M-distance to a
hyperplane), and the smallest making any class beat it is the minimum over ``t``.
"""

import numpy as np
import pytest
import tensorflow as tf

from advface.attacks.latent import (
    LOSSES,
    LatentAttackResult,
    LatentFAB,
    LatentPGD,
    _row_seed,
    latent_loss,
)
from advface.errors import AdvfaceError
from advface.progress import Cancelled
from advface.semantic.budget import Ellipsoid

K = 5
SOURCE = Ellipsoid.from_budgets([0.5, 0.5, 0.2, 0.5, 0.8])  # the source's M = diag(4, 4, 25, 4, 1.5625)


def _random_spd(seed: int) -> Ellipsoid:
    a = np.random.default_rng(seed).normal(size=(K, K))
    return Ellipsoid(a @ a.T + 0.5 * np.eye(K))


class AffineObjective:
    """``logits = c_row + G delta`` for ``C`` classes; the label of a row is ``argmax c_row`` unless given."""

    def __init__(self, weights, offsets, labels=None):
        self.weights = np.asarray(weights, np.float64)
        self.offsets = np.asarray(offsets, np.float64)
        self.num_classes, self.dimension = self.weights.shape
        self._labels = self.offsets.argmax(axis=1) if labels is None else np.asarray(labels)
        self._w = tf.constant(self.weights.T, tf.float32)
        self._c = tf.constant(self.offsets, tf.float32)

    def logits(self, delta, rows):
        return tf.matmul(delta, self._w) + tf.gather(self._c, rows)

    def labels(self, rows):
        return self._labels[np.asarray(rows)]

    def pairwise(self, inverse) -> np.ndarray:
        """``(N, C)``: the smallest M-norm making class t beat the label (inf for the label itself)."""
        n = len(self.offsets)
        y = self._labels
        g = self.weights[None, :, :] - self.weights[y][:, None, :]
        f0 = self.offsets - self.offsets[np.arange(n), y][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = -f0 / np.sqrt(np.einsum("ncj,jl,ncl->nc", g, inverse, g))
        out[np.arange(n), y] = np.inf
        return out

    def minimal(self, inverse) -> np.ndarray:
        return self.pairwise(inverse).min(axis=1)


def affine_problem(classes: int, minimal, seed: int, ellipsoid: Ellipsoid = SOURCE) -> AffineObjective:
    """A random affine objective whose rows need exactly ``minimal`` (M-norm) to be misclassified."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(classes, K))
    offsets = rng.normal(size=(len(minimal), classes))
    # Scaling a row's logits scales its margins, and with them every distance, keeping its label.
    scale = np.asarray(minimal) / AffineObjective(weights, offsets).minimal(ellipsoid.inverse)
    return AffineObjective(weights, offsets * scale[:, None])


# Shared objectives (the attacks compile once per objective and kind of step, so tests share them).
# FOUR: rows 0-9 the contract (row 9 relabelled: misclassified at delta = 0), rows 10-25 from 0.3 to 0.9
# for the smallest-success test, rows 26-30 out of reach (1.5) for the losses.
_FOUR_MINIMAL = np.concatenate(
    [
        [0.3, 0.5, 0.7, 0.9, 1.2, 1.5, 2.0, 3.0, 0.8, 0.6],
        np.random.default_rng(4).uniform(0.3, 0.9, 16),
        np.full(5, 1.5),
    ]
)
CONTRACT, SMALLEST, LOSS_ROWS = np.arange(10), np.arange(10, 26), np.arange(26, 31)
# TWO (verification-like): rows 0-9 around the budget, rows 10-69 for the last-step test.
_TWO_MINIMAL = np.concatenate(
    [[0.3, 0.6, 0.9, 0.97, 0.99, 1.01, 1.03, 1.1, 1.5, 3.0], np.linspace(0.4, 1.0, 60)]
)
THRESHOLD, LAST = np.arange(10), np.arange(10, 70)


@pytest.fixture(scope="module")
def four():
    base = affine_problem(4, _FOUR_MINIMAL, seed=10)
    labels = base.labels(np.arange(len(_FOUR_MINIMAL))).copy()
    labels[9] = (labels[9] + 1) % 4
    return AffineObjective(base.weights, base.offsets, labels)


@pytest.fixture(scope="module")
def two():
    return affine_problem(2, _TWO_MINIMAL, seed=3)


def _fresh(objective, result: LatentAttackResult) -> np.ndarray:
    return objective.logits(tf.constant(result.deltas), tf.constant(result.rows, tf.int32)).numpy().argmax(1)


# --- FAB-t: the smallest M-norm perturbation ------------------------------------------------------------


@pytest.mark.parametrize("ellipsoid", [SOURCE, _random_spd(3)], ids=["source-M", "random-SPD-M"])
def test_fab_finds_the_minimal_m_norm_perturbation_of_an_affine_objective(ellipsoid):
    rng = np.random.default_rng(1)
    objective = affine_problem(6, rng.uniform(0.2, 5.0, 100), seed=2, ellipsoid=ellipsoid)
    minimal = objective.minimal(ellipsoid.inverse)
    result = LatentFAB(ellipsoid=ellipsoid, steps=10, restarts=1, targets=5, batch_size=50)(
        objective, np.arange(100)
    )
    error = result.magnitudes / minimal - 1
    print(f"\nFAB-t / analytic minimal M-norm - 1 over 100 rows: {error.min():.5f} .. {error.max():.5f}")
    assert result.success.all()
    assert error.min() > -1e-4  # nothing closer than the analytic minimum can be adversarial
    assert error.max() < 0.01  # the bar


def test_fab_with_a_euclidean_step_misses_the_bar():
    """The same attack stepping along g instead of M^-1 g lands on the Euclidean-nearest boundary point."""

    class EuclideanFAB(LatentFAB):
        def _preconditioner(self):
            return np.eye(K)

    objective = affine_problem(6, np.random.default_rng(1).uniform(0.2, 5.0, 100), seed=2)
    minimal = objective.minimal(SOURCE.inverse)
    result = EuclideanFAB(ellipsoid=SOURCE, steps=10, restarts=1, targets=5, batch_size=50)(
        objective, np.arange(100)
    )
    error = result.magnitudes / minimal - 1
    print(f"\nEuclidean step / analytic - 1: median {np.median(error):.3f}, min {error.min():.3f}")
    assert result.success.all()
    assert np.mean(error > 0.01) > 0.9


def test_fab_attacks_the_classes_nearest_in_clean_logits():
    """With one target FAB-t reaches the boundary of the top other class, not the M-nearest one."""
    objective = affine_problem(4, np.ones(60), seed=5)
    pairwise = objective.pairwise(SOURCE.inverse)
    others = np.where(np.isinf(pairwise), -np.inf, objective.offsets)
    top = pairwise[np.arange(60), others.argmax(1)]
    rows = np.flatnonzero(top > 1.1)  # rows whose top class is not the M-nearest
    assert len(rows) >= 5
    one = LatentFAB(ellipsoid=SOURCE, steps=10, restarts=1, targets=1)(objective, rows)
    np.testing.assert_allclose(one.magnitudes, top[rows], rtol=0.01)
    every = LatentFAB(ellipsoid=SOURCE, steps=10, restarts=1, targets=3)(objective, rows)
    np.testing.assert_allclose(every.magnitudes, 1.0, rtol=0.01)


def test_fab_restarts_never_lose_the_best():
    objective = affine_problem(4, np.random.default_rng(0).uniform(0.3, 3, 12), seed=6)
    one = LatentFAB(ellipsoid=SOURCE, steps=5, restarts=1, targets=3)(objective, np.arange(12), seed=0)
    three = LatentFAB(ellipsoid=SOURCE, steps=5, restarts=3, targets=3)(objective, np.arange(12), seed=0)
    assert three.success.all() and (three.magnitudes <= one.magnitudes + 1e-6).all()


class VerificationCone:
    """Verification with a distance: logits ``[-||A delta||, -threshold_row]``, label 0 (same person).

    At ``delta = 0`` the distance is at its floor and has no gradient, as a face's distance to its own
    clean embedding. The smallest M-norm delta that passes the threshold ``t`` is ``t / sigma_max(A L^-T)``
    with ``M = L L^T``."""

    num_classes, dimension = 2, K

    def __init__(self, a, minimal, ellipsoid=SOURCE):
        whitened = a @ np.linalg.inv(np.linalg.cholesky(ellipsoid.matrix).T)
        thresholds = np.asarray(minimal) * np.linalg.svd(whitened, compute_uv=False)[0]
        self._a = tf.constant(a.T, tf.float32)
        self._t = tf.constant(thresholds, tf.float32)

    def logits(self, delta, rows):
        squared = tf.reduce_sum(tf.matmul(delta, self._a) ** 2, axis=1)
        distance = tf.sqrt(tf.maximum(squared, 1e-12))
        return -tf.stack([distance, tf.gather(self._t, rows)], axis=1)

    def labels(self, rows):
        return np.zeros(len(np.atleast_1d(rows)), np.int64)


def test_fab_starts_off_the_clean_point_where_a_distance_has_no_gradient(monkeypatch):
    minimal = np.array([0.3, 0.7, 1.0, 2.0])
    objective = VerificationCone(np.random.default_rng(0).normal(size=(4, K)), minimal)
    result = LatentFAB(ellipsoid=SOURCE, steps=20, restarts=3)(objective, np.arange(4))
    error = result.magnitudes / minimal - 1
    print(f"\nFAB-t on a verification distance / analytic - 1: {np.round(error, 4)}")
    assert result.success.all() and error.min() > -1e-4 and error.max() < 0.02
    # Exactly at the clean point the gradient is 0 and FAB never moves.
    monkeypatch.setattr("advface.attacks.latent.START_OFFSET", 0.0)
    stuck = LatentFAB(ellipsoid=SOURCE, steps=20, restarts=1)(objective, np.arange(4))
    assert not stuck.success.any()


# --- PGD: the budget, the smallest success, the last step ------------------------------------------------


def test_pgd_succeeds_exactly_when_the_minimum_is_inside_the_ellipsoid(two):
    minimal = _TWO_MINIMAL[THRESHOLD]
    np.testing.assert_allclose(two.minimal(SOURCE.inverse)[THRESHOLD], minimal)
    result = LatentPGD(ellipsoid=SOURCE, steps=10, restarts=2)(two, THRESHOLD)  # the source's SGD, lr 100
    np.testing.assert_array_equal(result.success, minimal <= 1)
    assert (result.magnitudes <= 1 + 1e-5).all()


def _reference_pgd(objective, ellipsoid, rows, *, seed, steps, restarts, learning_rate, momentum):
    """numpy PGD with xent and SGD, every iterate: per row the (M-norm, success) of each, in order."""
    g = objective.weights
    out = []
    for row in rows:
        y = objective.labels([row])[0]
        iterates = []
        for delta in ellipsoid.sample_inside(restarts, seed=_row_seed(seed, row)):
            velocity = np.zeros(K)
            for _ in range(steps + 1):
                z = objective.offsets[row] + g @ delta
                iterates.append((ellipsoid.norm(delta), z.argmax() != y))
                p = np.exp(z - z.max())
                p /= p.sum()
                velocity = momentum * velocity + (g[y] - p @ g)  # d log p_y / d delta
                delta = ellipsoid.project(delta - learning_rate * velocity)
        out.append(iterates)
    return out


def test_pgd_keeps_the_smallest_success_and_early_stop_the_first(four):
    objective, rows = four, SMALLEST
    settings = dict(ellipsoid=SOURCE, steps=6, restarts=3, learning_rate=0.03, on_surface=False)
    smallest = LatentPGD(**settings)(objective, rows, seed=7)
    first = LatentPGD(**settings, early_stop=True)(objective, rows, seed=7)
    reference = _reference_pgd(
        objective, SOURCE, rows, seed=7, steps=6, restarts=3, learning_rate=0.03, momentum=0.9
    )
    expect_smallest = [min((n for n, s in it if s), default=0.0) for it in reference]
    expect_first = [next((n for n, s in it if s), 0.0) for it in reference]
    np.testing.assert_allclose(smallest.magnitudes, expect_smallest, rtol=1e-4)
    np.testing.assert_allclose(first.magnitudes, expect_first, rtol=1e-4)
    fooled = np.array([any(s for _, s in it) for it in reference])
    assert fooled.sum() >= 12
    np.testing.assert_array_equal(smallest.success, fooled)
    np.testing.assert_array_equal(first.success, fooled)
    assert (smallest.magnitudes <= first.magnitudes + 1e-6).all()
    assert np.sum(smallest.magnitudes < first.magnitudes - 1e-3) >= 3


def test_pgd_evaluates_the_last_step(two):
    """With one restart, ``steps=s-1`` sees the first s iterates of ``steps=s``; a row that only the
    longer run fools was fooled by its last iterate (the source never evaluated it)."""
    objective, rows = two, LAST
    settings = dict(ellipsoid=SOURCE, restarts=1, learning_rate=0.02, on_surface=False, batch_size=60)
    shorter = LatentPGD(steps=2, **settings)(objective, rows)
    longer = LatentPGD(steps=3, **settings)(objective, rows)
    last = longer.success & ~shorter.success
    assert (longer.success >= shorter.success).all()
    assert last.sum() >= 2, "no row fooled only by the last step"
    # The success is the last iterate itself: in the budget, and not any iterate the shorter run saw.
    assert (longer.magnitudes[last] <= 1 + 1e-5).all() and (longer.magnitudes[last] > 0).all()


# --- losses ---------------------------------------------------------------------------------------------


def test_latent_losses_match_their_formulas():
    z = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 0], np.int32)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    own = np.arange(6), y
    other = np.where(np.eye(5, dtype=bool)[y], -np.inf, z)
    p_other = np.where(np.eye(5, dtype=bool)[y], -1, p).max(1)
    top = -np.sort(-z, axis=1)
    expected = {
        "xent": np.log(p[own]),
        "away": p[own],
        "nearest": -p_other,
        "diff": p[own] - p_other,
        "dlr": (z[own] - other.max(1)) / (top[:, 0] - top[:, 2]),
    }
    for loss in LOSSES:
        np.testing.assert_allclose(
            latent_loss(loss, tf.constant(z), tf.constant(y)).numpy(),
            expected[loss],
            rtol=1e-5,
            atol=1e-6,
            err_msg=loss,
        )


@pytest.mark.parametrize(
    ("loss", "optimizer"), [(loss, "sgd") for loss in LOSSES] + [("xent", "adam"), ("xent", "rmsprop")]
)
def test_every_loss_and_optimizer_decreases_its_loss(loss, optimizer, four):
    """Out of reach (1.5), so nothing stops the descent; the reported loss is the batch mean per step."""
    rate = {"sgd": 0.2, "adam": 0.05, "rmsprop": 0.02}[optimizer]
    events = []
    attack = LatentPGD(
        ellipsoid=SOURCE,
        steps=8,
        restarts=1,
        optimizer=optimizer,
        learning_rate=rate,
        loss=loss,
        on_surface=False,
    )
    result = attack(four, LOSS_ROWS, progress=events.append)
    losses = [e.metrics["loss"] for e in events]
    assert len(losses) == 8 and losses[0] - losses[-1] > 0.05 * abs(losses[0]), losses
    assert not result.success.any()


# --- the contract of both attacks ---------------------------------------------------------------------

ATTACKS = {
    "pgd": lambda **kw: LatentPGD(ellipsoid=SOURCE, steps=3, restarts=2, learning_rate=1.0, **kw),
    "fab": lambda **kw: LatentFAB(ellipsoid=SOURCE, steps=3, restarts=2, targets=2, **kw),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_latent_attacks_keep_the_contract(name, four):
    objective, rows = four, CONTRACT
    events = []
    attack = ATTACKS[name](batch_size=4)
    result = attack(objective, rows, seed=3, progress=events.append)

    # 1. Shapes, types, the fields.
    assert isinstance(result, LatentAttackResult) and result.attack == type(attack).__name__
    assert result.deltas.shape == (10, K) and result.deltas.dtype == np.float32
    assert result.success.dtype == bool and result.seed == 3 and result.steps == 3 and result.restarts == 2
    np.testing.assert_array_equal(result.labels, objective.labels(rows))
    np.testing.assert_array_equal(result.clean_predicted, objective.offsets[rows].argmax(1))

    # 2. Success and predictions are a fresh forward pass; magnitudes are M-norms; PGD stays inside.
    np.testing.assert_array_equal(result.predicted, _fresh(objective, result))
    np.testing.assert_array_equal(result.success, result.predicted != result.labels)
    np.testing.assert_allclose(result.magnitudes, SOURCE.norm(result.deltas), rtol=1e-6)
    if name == "pgd":
        assert (result.magnitudes <= 1 + 1e-5).all()
        assert result.success[:4].all() and not result.success[4:8].any()
    else:
        assert result.success.all()
    assert result.success[9] and result.magnitudes[9] == 0  # misclassified clean: delta = 0
    assert result.success_rate == result.success.mean()
    assert result.mean_magnitude == pytest.approx(result.magnitudes[result.success].mean())

    # 3. Progress once per step: 9 rows attacked in batches of 4 -> 3 batches.
    per_batch = 3 * 2 * (2 if name == "fab" else 1)
    assert [e.step for e in events] == list(range(1, 3 * per_batch + 1))
    assert all(e.total == 3 * per_batch for e in events)

    # 4. Seeds: reproducible, independent of batch size, of chunking and of order; another seed differs.
    again = ATTACKS[name](batch_size=20)(objective, rows, seed=3)
    np.testing.assert_allclose(again.deltas, result.deltas, atol=1e-6)
    order = np.array([7, 2, 9, 0, 5])
    parts = [
        ATTACKS[name](batch_size=2)(objective, part, seed=3) for part in (order, np.setdiff1d(rows, order))
    ]
    np.testing.assert_allclose(parts[0].deltas, result.deltas[order], atol=1e-6)
    np.testing.assert_allclose(parts[1].deltas, result.deltas[np.setdiff1d(rows, order)], atol=1e-6)
    if name == "pgd":  # (FAB converges to the same point from any start on an affine objective)
        other = attack(objective, rows, seed=4)
        assert not np.allclose(other.deltas, result.deltas)

    # 5. Stop: Cancelled raised by the callback at the second step ends the call.
    seen = []

    def stop(event):
        seen.append(event)
        if len(seen) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        attack(objective, rows, seed=3, progress=stop)
    assert len(seen) == 2


def test_fab_in_verification_mode_has_one_target():
    objective = affine_problem(2, np.array([0.5, 2.0, 7.0]), seed=11)
    events = []
    result = LatentFAB(ellipsoid=SOURCE, steps=4, restarts=1)(objective, np.arange(3), progress=events.append)
    assert len(events) == 4  # targets=10 clipped to the one other class
    np.testing.assert_allclose(result.magnitudes, [0.5, 2.0, 7.0], rtol=0.01)


# --- errors ---------------------------------------------------------------------------------------------


def test_latent_attacks_explain_bad_input(four):
    with pytest.raises(AdvfaceError, match="Received: optimizer='nadam'"):
        LatentPGD(ellipsoid=SOURCE, optimizer="nadam")
    with pytest.raises(AdvfaceError, match="Received: loss='hinge'"):
        LatentPGD(ellipsoid=SOURCE, loss="hinge")
    with pytest.raises(AdvfaceError, match="Received: steps=0"):
        LatentPGD(ellipsoid=SOURCE, steps=0)
    with pytest.raises(AdvfaceError, match="Received: learning_rate=-1"):
        LatentPGD(ellipsoid=SOURCE, learning_rate=-1)
    with pytest.raises(AdvfaceError, match="Received: ellipsoid of type ndarray"):
        LatentFAB(ellipsoid=np.eye(K))
    with pytest.raises(AdvfaceError, match="Received: eta=0.5"):
        LatentFAB(ellipsoid=SOURCE, eta=0.5)
    with pytest.raises(AdvfaceError, match="Received: alpha_max=2"):
        LatentFAB(ellipsoid=SOURCE, alpha_max=2)
    attack = LatentPGD(ellipsoid=Ellipsoid(np.eye(3)), steps=1, restarts=1)
    with pytest.raises(AdvfaceError, match="Received: objective.dimension=5, ellipsoid.k=3"):
        attack(four, [0])
    with pytest.raises(AdvfaceError, match="Received: shape=\\(2, 1\\)"):
        LatentPGD(ellipsoid=SOURCE)(four, [[0], [1]])
    with pytest.raises(AdvfaceError, match="Received: seed=-1"):
        LatentPGD(ellipsoid=SOURCE)(four, [0], seed=-1)
    with pytest.raises(AdvfaceError, match="Received: num_classes=2"):
        LatentPGD(ellipsoid=SOURCE, loss="dlr")(affine_problem(2, [1.0], seed=0), [0])
    with pytest.raises(AdvfaceError, match="Received: object"):
        LatentPGD(ellipsoid=SOURCE)(object(), [0])
