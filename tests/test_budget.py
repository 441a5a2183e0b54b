"""The semantic budget region: construction, norms, the exact Euclidean projection (against the test vectors
of reference/algorithms.md 5.1, scipy.optimize and the KKT conditions), sampling."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import optimize, stats

from advface.errors import AdvfaceError
from advface.semantic.budget import Ellipsoid

BUDGETS = {"age": 0.5, "eyeglasses": 0.5, "gender": 0.2, "pose": 0.5, "smile": 0.8}
M_SOURCE = np.diag([4, 4, 25, 4, 1.5625])


def _spd(k: int, condition: float, seed: int) -> np.ndarray:
    """A random symmetric positive definite matrix with the given condition number."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((k, k)))
    return (q * np.geomspace(1, condition, k)) @ q.T


def _source_region() -> Ellipsoid:
    return Ellipsoid.from_budgets(BUDGETS)


# ------------------------------------------------------------------------------------------------
# Construction


def test_from_budgets_is_the_source_matrix():
    region = _source_region()
    np.testing.assert_array_equal(region.matrix, M_SOURCE)
    assert region.names == tuple(BUDGETS) and region.k == 5
    np.testing.assert_allclose(region.inverse, np.diag(np.array(list(BUDGETS.values())) ** 2), rtol=1e-15)
    assert not region.matrix.flags.writeable
    # A sequence with names, a mapping reordered by names, and the source's --scale-factor.
    same = Ellipsoid.from_budgets([0.5, 0.5, 0.2, 0.5, 0.8], names=tuple(BUDGETS))
    assert same == region and hash(same) == hash(region)
    picked = Ellipsoid.from_budgets(BUDGETS, names=["smile", "gender"], scale=2.0)
    np.testing.assert_allclose(picked.matrix, np.diag([2 / 0.64, 2 / 0.04]))
    assert picked.names == ("smile", "gender")


def test_mvee_of_the_budget_points_is_diag_one_over_m_squared():
    m = np.array([0.5, 0.5, 0.2, 0.5, 0.8])
    region = Ellipsoid.mvee(np.concatenate([np.diag(m), -np.diag(m)]), names=tuple(BUDGETS))
    np.testing.assert_allclose(region.matrix, M_SOURCE, rtol=1e-14, atol=0)
    assert np.count_nonzero(region.matrix - np.diag(np.diag(region.matrix))) == 0
    assert region.names == tuple(BUDGETS)


def test_mvee_is_the_minimum_volume_enclosing_ellipsoid():
    # Against an independent solver: maximise log det M = 2 sum log L_ii over M = L L^T subject to
    # p^T M p <= 1 for every point (SLSQP on the Cholesky factor).
    points = np.random.default_rng(3).standard_normal((25, 2)) @ np.array([[2.0, 0.3], [0.0, 0.5]])
    ours = Ellipsoid.mvee(points, tol=1e-9)
    assert ours.norm(points).max() <= 1 + 1e-12  # every point enclosed, exactly
    assert ours.norm(points).max() >= 1 - 1e-12  # and touching

    def unpack(v):
        return np.array([[v[0], 0.0], [v[1], v[2]]])

    def constraints(v):
        return 1 - np.sum((points @ unpack(v)) ** 2, axis=1)

    scale = 1 / np.abs(points).max() / 2
    reference = optimize.minimize(
        lambda v: -2 * (np.log(abs(v[0])) + np.log(abs(v[2]))),
        np.array([scale, 0.0, scale]),
        constraints=[{"type": "ineq", "fun": constraints}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    assert reference.success
    reference_matrix = unpack(reference.x) @ unpack(reference.x).T
    np.testing.assert_allclose(np.linalg.det(ours.matrix), np.linalg.det(reference_matrix), rtol=1e-6)
    np.testing.assert_allclose(ours.matrix, reference_matrix, rtol=1e-4, atol=1e-6)


def test_mvee_is_affine_equivariant():
    points = np.random.default_rng(4).standard_normal((40, 4))
    transform = np.random.default_rng(5).standard_normal((4, 4)) + 3 * np.eye(4)
    region = Ellipsoid.mvee(points, tol=1e-10)
    mapped = Ellipsoid.mvee(points @ transform.T, tol=1e-10)
    inverse = np.linalg.inv(transform)
    np.testing.assert_allclose(mapped.matrix, inverse.T @ region.matrix @ inverse, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Ellipsoid(np.array([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
        (lambda: Ellipsoid(np.diag([1.0, -1.0])), "positive definite"),
        (lambda: Ellipsoid(np.ones(3)), r"Received: matrix.shape=\(3,\)"),
        (lambda: Ellipsoid(np.eye(2), names=("a",)), "Received: names="),
        (lambda: Ellipsoid.from_budgets([0.5, 0.0]), r"Received: budgets=\[0.5, 0.0\]"),
        (lambda: Ellipsoid.from_budgets({"age": 0.5}, names=["smile"]), "No budget for"),
        (lambda: Ellipsoid.from_budgets([0.5], scale=-1), "Received: scale=-1"),
        (lambda: Ellipsoid.mvee(np.array([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])), "must span"),
        (lambda: _source_region().project(np.ones(3)), r"Received: delta.shape=\(3,\)"),
        (lambda: _source_region().to_surface(np.zeros((2, 5))), "zero vector"),
        (lambda: _source_region().scaled(0), "Received: factor=0"),
    ],
)
def test_errors_say_what_was_received(make, match):
    with pytest.raises(AdvfaceError, match=match):
        make()


# ------------------------------------------------------------------------------------------------
# Norms


def test_norm_and_its_tensorflow_version():
    region = Ellipsoid(_spd(5, 50.0, seed=0))
    delta = np.random.default_rng(1).standard_normal((3, 4, 5))
    expected = np.sqrt(np.einsum("...i,ij,...j->...", delta, region.matrix, delta))
    np.testing.assert_allclose(region.norm(delta), expected, rtol=1e-12)
    np.testing.assert_allclose(region.norm(delta[0, 0]), expected[0, 0], rtol=1e-12)
    np.testing.assert_allclose(region.norm_tf(delta).numpy(), expected, rtol=1e-5)
    # Differentiable (gradient M d / ||d||_M), inside tf.function, and 0 rather than NaN at the origin.
    batch = tf.constant(np.concatenate([delta[0], np.zeros((1, 5))]), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(batch)
        norms = tf.function(region.norm_tf)(batch)
    gradient = tape.gradient(norms, batch).numpy()
    expected_gradient = delta[0] @ region.matrix / expected[0][:, None]
    np.testing.assert_allclose(gradient[:4], expected_gradient, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(gradient[4], np.zeros(5))


# ------------------------------------------------------------------------------------------------
# Projection


def test_projection_test_vectors():
    region = _source_region()
    y = np.array([[1, 1, 1, 1, 1], [1, -0.5, 0.1, 0.2, 2], [0.3, 0, 0, 0, 0]], dtype=np.float64)
    expected = np.array(
        [
            [0.232476, 0.232476, 0.046223, 0.232476, 0.436747],
            [0.182642, -0.091321, 0.003452, 0.036528, 0.727769],
            [0.3, 0, 0, 0, 0],
        ]
    )
    x = region.project(y)
    np.testing.assert_allclose(x, expected, atol=5e-7)
    np.testing.assert_allclose(region.norm(x), [1, 1, 0.6], rtol=1e-12)
    np.testing.assert_array_equal(x[2], y[2])  # inside: unchanged, bit for bit
    np.testing.assert_allclose(region.project(y[0]), x[0], rtol=0, atol=0)  # (k,) as well as (N, k)
    np.testing.assert_allclose(region.project_tf(y).numpy(), expected, atol=1e-6)
    assert region.project_tf(y[1]).shape == (5,) and region.project_tf(y).dtype == tf.float32


def test_projection_matches_scipy_for_a_general_matrix():
    region = Ellipsoid(_spd(5, 100.0, seed=2))
    rng = np.random.default_rng(6)
    y = rng.standard_normal((12, 5)) * rng.uniform(0.5, 3, (12, 1))
    y = y[region.norm(y) > 1.05]
    x = region.project(y)
    for point, ours in zip(y, x, strict=True):
        start = point / region.norm(point)
        reference = optimize.minimize(
            lambda v, p=point: np.sum((v - p) ** 2),
            start,
            jac=lambda v, p=point: 2 * (v - p),
            constraints=[
                {
                    "type": "ineq",
                    "fun": lambda v: 1 - v @ region.matrix @ v,
                    "jac": lambda v: -2 * region.matrix @ v,
                }
            ],
            method="SLSQP",
            options={"ftol": 1e-12, "maxiter": 500},
        )
        assert reference.success
        # Ours is at least as close as scipy's (it is the exact minimiser), and the same point.
        assert np.linalg.norm(ours - point) <= np.linalg.norm(reference.x - point) + 1e-9
        np.testing.assert_allclose(ours, reference.x, atol=1e-6)


@pytest.mark.parametrize("condition", [1.0, 1e3, 1e6])
def test_projection_satisfies_the_kkt_conditions_in_extreme_cases(condition):
    region = Ellipsoid(_spd(5, condition, seed=int(np.log10(condition))))
    surface = region.sample_surface(40, seed=1)
    rng = np.random.default_rng(7)
    # Far away (1e8 times the surface), just outside, barely outside (1 + 1e-12), random scales.
    y = np.concatenate(
        [surface * 1e8, surface * (1 + 1e-6), surface * (1 + 1e-12), surface * rng.uniform(1.5, 1e3, (40, 1))]
    )
    x = region.project(y)
    # Primal feasibility, on the surface.
    np.testing.assert_allclose(region.norm(x), 1.0, atol=1e-12)
    # Stationarity: y - x = t M x with t >= 0.
    gradient = x @ region.matrix
    t = np.sum((y - x) * gradient, axis=1) / np.sum(gradient**2, axis=1)
    assert np.all(t >= -1e-12)
    residual = np.linalg.norm(y - x - t[:, None] * gradient, axis=1)
    assert np.all(residual <= 1e-9 * np.maximum(np.linalg.norm(y, axis=1), 1))
    # No surface point is closer.
    others = region.sample_surface(2000, seed=2)
    for point, ours in zip(y[:40:4], x[:40:4], strict=True):
        assert np.linalg.norm(point - ours) <= np.linalg.norm(point - others, axis=1).min() + 1e-9
    # Barely inside: unchanged.
    inside = surface * (1 - 1e-12)
    np.testing.assert_array_equal(region.project(inside), inside)
    # The graph version agrees to float32 rounding, compiled and batched.
    compiled = tf.function(region.project_tf)(tf.constant(y, tf.float32)).numpy()
    np.testing.assert_allclose(compiled, x, rtol=0, atol=1e-5 * max(1.0, np.abs(x).max()))


def test_project_tf_compiles_with_xla_for_any_batch_and_leaves_points_inside_alone():
    region = _source_region()
    compiled = tf.function(
        region.project_tf, jit_compile=True, input_signature=[tf.TensorSpec([None, 5], tf.float32)]
    )
    inside = region.sample_inside(50, seed=3).astype(np.float32)
    np.testing.assert_array_equal(compiled(inside).numpy(), inside)
    outside = (inside[:7] * 10).astype(np.float32)
    np.testing.assert_allclose(compiled(outside).numpy(), region.project(outside), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Surface, sampling, scaling


def test_to_surface_and_scaled():
    region = Ellipsoid(_spd(5, 30.0, seed=4))
    delta = np.random.default_rng(8).standard_normal((6, 5))
    on = region.to_surface(delta)
    np.testing.assert_allclose(region.norm(on), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        on / np.linalg.norm(on, axis=1, keepdims=True), delta / np.linalg.norm(delta, axis=1, keepdims=True)
    )
    half = region.scaled(0.5)
    np.testing.assert_allclose(half.norm(delta), 2 * region.norm(delta), rtol=1e-12)
    np.testing.assert_allclose(half.norm(half.project(delta * 10)), 1.0, rtol=1e-12)


@pytest.mark.parametrize("matrix", [M_SOURCE, _spd(5, 1e3, seed=5)], ids=["source", "general"])
def test_samples_are_uniform_in_the_volume_and_on_the_surface(matrix):
    region = Ellipsoid(matrix)
    inside = region.sample_inside(4000, seed=0)
    assert inside.shape == (4000, 5)
    radii = region.norm(inside)
    assert radii.max() <= 1 + 1e-12
    # Uniform in the volume: P(||.||_M <= r) = r^k, and the whitened directions are isotropic.
    assert stats.kstest(radii**5, "uniform").pvalue > 1e-3
    whitened = inside @ np.linalg.cholesky(matrix)
    np.testing.assert_allclose(np.cov(whitened.T), np.eye(5) / 7, atol=0.02)  # E[x x^T] = I/(k+2)
    np.testing.assert_array_equal(region.sample_inside(4000, seed=0), inside)
    surface = region.sample_surface(500, seed=1)
    np.testing.assert_allclose(region.norm(surface), 1.0, rtol=1e-12)
    assert not np.array_equal(surface, region.sample_surface(500, seed=2))


def test_clamp_coordinate_keeps_the_offset_in_the_ellipsoid():
    region = Ellipsoid.from_budgets([1.0, 2.0, 0.5])
    delta = np.array([0.6, 0.0, 0.2])
    value = region.clamp_coordinate(delta, 1, 5.0)
    moved = delta.copy()
    moved[1] = value
    assert 0 < value < 2.0
    np.testing.assert_allclose(region.norm(moved), 1.0, rtol=1e-9)
    assert region.clamp_coordinate(delta, 1, 0.1) == 0.1  # inside: unchanged
    assert region.clamp_coordinate(np.zeros(3), 0, -3.0) == pytest.approx(-1.0)
    assert delta.tolist() == [0.6, 0.0, 0.2]  # the caller's offset is not changed
