"""Randomized smoothing: the Clopper-Pearson bound and radii against reference/algorithms.md 5.1, and
certificates checked against the exact smoothed classifier of linear base classifiers (for Gaussian noise
its class probabilities are Gaussian CDFs), at the exact worst-case perturbation of each certified region."""

import numpy as np
import pytest
from scipy import special, stats

from advface.certification import Certificate, Smooth, clopper_pearson_lower, min_trials
from advface.errors import AdvfaceError
from advface.semantic.budget import Ellipsoid

ALPHA = 0.001
SOURCE_BUDGETS = np.array([0.5, 0.5, 0.2, 0.5, 0.8])


def _source_region() -> Ellipsoid:
    return Ellipsoid.from_budgets(SOURCE_BUDGETS)


def _general_region() -> Ellipsoid:
    """A non-diagonal budget matrix, eigenvalues 2 .. 100."""
    q, _ = np.linalg.qr(np.random.default_rng(11).standard_normal((5, 5)))
    return Ellipsoid((q * np.geomspace(2.0, 100.0, 5)) @ q.T)


def _constant(batch):
    return np.zeros(len(batch), dtype=np.int64)


def _covariance(smooth: Smooth) -> np.ndarray:
    """The noise covariance C the smoother is meant to draw from."""
    region, sigma = smooth.ellipsoid, smooth.sigma
    if smooth.noise == "isotropic":
        return sigma**2 * np.eye(region.k)
    if smooth.noise == "anisotropic":
        return sigma**2 * region.inverse
    return np.diag((sigma * SOURCE_BUDGETS**2) ** 2)


# ------------------------------------------------------------------------------------------------
# Bounds and test vectors


@pytest.mark.parametrize(
    "successes, trials, p_lower, gap",
    [
        (10_000, 10_000, 0.999309, 3.1986),
        (9_900, 10_000, 0.986531, 2.2124),
        (9_000, 10_000, 0.890410, 1.2287),
        (100_000, 100_000, 0.999931, 3.8115),
        (99_000, 100_000, 0.988989, 2.2900),
        (90_000, 100_000, 0.897036, 1.2648),
    ],
)
def test_clopper_pearson_test_vectors(successes, trials, p_lower, gap):
    bound = clopper_pearson_lower(successes, trials, ALPHA)
    assert bound == pytest.approx(p_lower, abs=5e-7)
    assert stats.norm.ppf(bound) == pytest.approx(gap, abs=5e-5)
    # The definition, independently: at the bound, seeing >= successes has probability alpha.
    assert stats.binom.sf(successes - 1, trials, bound) == pytest.approx(ALPHA, rel=1e-6)


def test_min_trials_is_the_smallest_n_that_can_certify():
    assert min_trials(0.001) == 10
    for alpha in (0.5, 0.25, 0.1, 0.05, 0.001, 1e-6):
        n = min_trials(alpha)
        assert clopper_pearson_lower(n, n, alpha) > 0.5
        assert n == 1 or clopper_pearson_lower(n - 1, n - 1, alpha) <= 0.5


def test_constant_classifier_reaches_the_test_vector_radius():
    certificate = Smooth(_constant, 3, sigma=0.1).certify(np.zeros(5), n=10_000, alpha=ALPHA)
    assert certificate.predicted == 0 and certificate.counts.tolist() == [10_000, 0, 0]
    assert certificate.p_lower == pytest.approx(0.999309, abs=5e-7)
    assert certificate.gap == pytest.approx(3.1986, abs=5e-5)
    assert certificate.radius == pytest.approx(0.31986, abs=5e-6)
    assert certificate.equal_volume_radius == certificate.radius and certificate.radius_m is None
    assert (certificate.n0, certificate.n, certificate.alpha, certificate.warning) == (100, 10_000, ALPHA, "")


def test_radii_of_each_noise_for_the_source_budgets():
    region, gap = _source_region(), stats.norm.ppf(clopper_pearson_lower(10_000, 10_000, ALPHA))
    isotropic = Smooth(_constant, 2, sigma=0.1, ellipsoid=region).certify(np.zeros(5))
    # The largest M-ball inside the L2 ball: sqrt(lambda_min(M)) = 1 / 0.8.
    assert isotropic.radius_m == pytest.approx(0.1 * gap / 0.8, rel=1e-12)
    anisotropic = Smooth(_constant, 2, sigma=0.1, noise="anisotropic", ellipsoid=region).certify(np.zeros(5))
    assert anisotropic.radius_m == pytest.approx(0.1 * gap, rel=1e-12)
    assert anisotropic.radius == pytest.approx(0.1 * gap / 5, rel=1e-12)  # 1 / sqrt(lambda_max(M))
    assert anisotropic.equal_volume_radius == pytest.approx(0.1 * gap * np.prod(SOURCE_BUDGETS) ** 0.2)
    # The source's noise: std sigma m^2, proxy radius 0.04 sigma gap, true equal-volume factor 0.209128
    # where the source's plots used (V_5 prod std)^(1/5) = 0.291522.
    source = Smooth(_constant, 2, sigma=1.0, noise="anisotropic-source", ellipsoid=region)
    np.testing.assert_allclose(source.principal_std, [0.25, 0.25, 0.04, 0.25, 0.64], rtol=1e-15)
    certificate = source.certify(np.zeros(5))
    assert certificate.gap == pytest.approx(gap, rel=1e-12)
    assert certificate.radius == pytest.approx(0.04 * gap, rel=1e-12)
    assert certificate.radius_m == pytest.approx(0.2 * gap, rel=1e-12)  # sigma * min_i m_i
    factor = certificate.equal_volume_radius / certificate.gap
    assert factor == pytest.approx(0.209128, abs=5e-7)
    volume_5 = np.pi**2.5 / special.gamma(3.5)
    assert (volume_5 * np.prod(source.principal_std)) ** 0.2 == pytest.approx(0.291522, abs=5e-7)


@pytest.mark.parametrize("noise", ["isotropic", "anisotropic", "anisotropic-source"])
def test_noise_has_the_documented_covariance(noise):
    region = _source_region() if noise == "anisotropic-source" else _general_region()
    seen = []

    def record(batch):
        seen.append(batch.copy())
        return _constant(batch)

    smooth = Smooth(record, 2, sigma=0.3, noise=noise, ellipsoid=region)
    x = np.arange(5, dtype=np.float32)
    smooth.certify(x, n0=10, n=40_000)
    noise_samples = np.concatenate(seen) - x
    assert seen[0].dtype == np.float32 and seen[0].shape[1:] == (5,)
    expected = _covariance(smooth)
    np.testing.assert_allclose(np.cov(noise_samples.T), expected, atol=0.03 * np.abs(expected).max())
    np.testing.assert_allclose(noise_samples.mean(0), 0, atol=0.03 * np.sqrt(np.diag(expected)).max())


# ------------------------------------------------------------------------------------------------
# The certified radius is never violated (exact smoothed classifiers of linear models)


def _tight_direction(smooth: Smooth, kind: str) -> np.ndarray:
    """The boundary normal along which the reported ball of ``kind`` ("radius" or "radius_m") touches
    the certified region (so a sound radius is also the largest possible there)."""
    covariance = _covariance(smooth)
    metric = np.eye(5) if kind == "radius" else smooth.ellipsoid.matrix
    # The ball {delta^T metric delta <= r^2} touches {delta^T C^-1 delta <= gap^2} along the eigenvector of
    # the smallest generalised eigenvalue of (metric C); the normal there is metric times it.
    values, vectors = np.linalg.eig(metric @ covariance)
    direction = metric @ np.real(vectors[:, np.argmin(np.real(values))])
    return direction / np.linalg.norm(direction)


@pytest.mark.parametrize(
    "noise, region",
    [
        ("isotropic", _general_region()),
        ("anisotropic", _general_region()),
        ("anisotropic", _source_region()),
        ("anisotropic-source", _source_region()),
    ],
    ids=["isotropic", "anisotropic", "anisotropic-diagonal", "anisotropic-source"],
)
def test_two_class_linear_certificates_hold_at_the_worst_case_perturbation(noise, region):
    """f(x) = [w.x + b > 0]. Under N(0, C) noise P(f = 1) = Phi(margin / sqrt(w^T C w)), so the smoothed
    classifier is the sign of the margin. Within a ball ||delta||_G <= r (G = I, M, or C^-1) the margin
    moves by at most r sqrt(w^T G^-1 w), reached at delta = -r G^-1 w / sqrt(w^T G^-1 w): the exact worst
    case. Each reported radius must keep the smoothed class there, and be close to the true distance to the
    smoothed boundary along some direction."""
    sigma, rng = 0.4, np.random.default_rng(0)
    directions = [
        _tight_direction(Smooth(_constant, 2, sigma=sigma, noise=noise, ellipsoid=region), k)
        for k in ("radius", "radius_m")
    ]
    directions += list(rng.standard_normal((14, 5)))
    ratios = {"gap": [], "radius": [], "radius_m": []}
    abstained = 0
    for trial, w in enumerate(directions):
        w = np.asarray(w) / np.linalg.norm(w)
        smooth = Smooth(
            lambda b, w=w: (b @ w.astype(np.float32) > 0).astype(np.int64),
            2,
            sigma=sigma,
            noise=noise,
            ellipsoid=region,
        )
        covariance = _covariance(smooth)
        spread = np.sqrt(w @ covariance @ w)
        # A point whose true gap Phi^-1(p_A) is between 0.3 and 2.8, on either side of w.x = 0.
        true_gap = rng.uniform(0.3, 2.8) * rng.choice([-1, 1])
        x = rng.standard_normal(5)
        x += (true_gap * spread - x @ w) * w
        margin = float(x.astype(np.float32) @ w)
        certificate = smooth.certify(x.astype(np.float32), n=10_000, alpha=ALPHA, seed=trial)
        if certificate.abstained:
            abstained += 1
            continue
        side = 1 if certificate.predicted == 1 else -1
        assert certificate.predicted == int(margin > 0), "the smoothed prediction is wrong"
        assert certificate.gap <= abs(margin) / spread, "p_lower exceeds the true p_A"
        for kind, metric in (
            ("gap", np.linalg.inv(covariance)),
            ("radius", np.eye(5)),
            ("radius_m", region.matrix),
        ):
            r = certificate.gap if kind == "gap" else getattr(certificate, kind)
            inverse = np.linalg.inv(metric)
            reach = np.sqrt(w @ inverse @ w)
            worst = -side * r * inverse @ w / reach
            assert np.sqrt(worst @ metric @ worst) == pytest.approx(r, rel=1e-9)
            moved = margin + w @ worst
            p_top = stats.norm.cdf(side * moved / spread)
            assert int(moved > 0) == certificate.predicted and p_top >= 0.5, (
                f"{kind}={r} of a {noise} certificate is violated: margin {margin} -> {moved}"
            )
            ratios[kind].append(r / (abs(margin) / reach))  # reported / true distance in that norm
    assert abstained <= 1
    for kind, values in ratios.items():
        assert max(values) <= 1
        assert max(values) >= 0.85, f"{kind} is vacuous: at most {max(values):.2f} of the true distance"
    assert np.median(ratios["gap"]) >= 0.85


@pytest.mark.parametrize("noise", ["isotropic", "anisotropic"])
def test_three_class_linear_certificates_hold_on_the_certified_surface(noise):
    """f(x) = argmax(W x + b), 3 classes. The smoothed probability of class A is a bivariate normal CDF:
    P(D (x + e) + d > 0) for the two rows D = W_A - W_j; it must stay >= 1/2 on the whole certified
    region, checked at each pairwise boundary's worst case and at random points of its surface."""
    region, sigma = _general_region(), 0.4
    rng = np.random.default_rng(1)
    weights, bias = rng.standard_normal((3, 5)), rng.standard_normal(3)
    smooth = Smooth(
        lambda b: np.argmax(b @ weights.T.astype(np.float32) + bias.astype(np.float32), axis=1),
        3,
        sigma=sigma,
        noise=noise,
        ellipsoid=region,
    )
    covariance = _covariance(smooth)
    root = np.linalg.cholesky(covariance)

    def p_class(points, top):
        others = [j for j in range(3) if j != top]
        rows = weights[top] - weights[others]
        offsets = bias[top] - bias[others]
        normal = stats.multivariate_normal(mean=np.zeros(2), cov=rows @ covariance @ rows.T)
        return np.array([normal.cdf(rows @ p + offsets) for p in points])

    certified = 0
    for trial in range(10):
        x = rng.standard_normal(5) * 0.8
        certificate = smooth.certify(x.astype(np.float32), n=10_000, alpha=ALPHA, seed=trial)
        if certificate.abstained:
            continue
        certified += 1
        top, gap = certificate.predicted, certificate.gap
        assert p_class([x], top)[0] >= certificate.p_lower
        worst = []
        for j in (j for j in range(3) if j != top):
            normal = weights[top] - weights[j]
            worst.append(-gap * covariance @ normal / np.sqrt(normal @ covariance @ normal))
        directions = rng.standard_normal((20, 5))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        surface = np.concatenate([worst, gap * directions @ root.T])
        np.testing.assert_allclose(
            np.einsum("ij,jk,ik->i", surface, np.linalg.inv(covariance), surface), gap**2
        )
        assert p_class(x + surface, top).min() >= 0.5, f"the {noise} certificate at trial {trial} is violated"
    assert certified >= 6


# ------------------------------------------------------------------------------------------------
# Abstention, the guard, seeds, predict, images, progress, errors


def test_abstains_on_the_boundary_instead_of_returning_a_class():
    w = np.array([1, 0, 0, 0, 0], np.float32)
    smooth = Smooth(lambda b: (b @ w > 0).astype(np.int64), 2, sigma=0.5, ellipsoid=_source_region())
    certificate = smooth.certify(np.zeros(5), n=10_000, alpha=ALPHA, seed=3)
    assert certificate.abstained and certificate.predicted == -1
    assert (certificate.gap, certificate.radius, certificate.radius_m, certificate.equal_volume_radius) == (
        0,
        0,
        0,
        0,
    )
    assert certificate.p_lower < 0.5 and certificate.counts.sum() == 10_000
    assert smooth.predict(np.zeros(5), n=10_000, alpha=ALPHA, seed=3) == -1
    assert smooth.predict(np.array([1.5, 0, 0, 0, 0]), n=1_000, alpha=ALPHA) == 1


def test_too_few_samples_warn_and_abstain():
    certificate = Smooth(_constant, 2, sigma=0.1).certify(np.zeros(5), n0=5, n=5, alpha=ALPHA)
    assert "n=5" in certificate.warning and "n >= 10" in certificate.warning
    assert certificate.abstained and certificate.p_lower == pytest.approx(ALPHA**0.2)
    assert Smooth(_constant, 2, sigma=0.1).certify(np.zeros(5), n=10, alpha=ALPHA).warning == ""


def test_seeds_reproduce_certificates():
    w = np.ones(5, np.float32) / np.sqrt(5)
    smooth = Smooth(
        lambda b: (b @ w > 0).astype(np.int64), 2, sigma=0.5, noise="anisotropic", ellipsoid=_general_region()
    )
    x = (0.3 * w).astype(np.float32)
    first, second = smooth.certify(x, n=2_000, seed=7), smooth.certify(x, n=2_000, seed=7)
    assert first == second and np.array_equal(first.counts, second.counts) and isinstance(first, Certificate)
    assert not np.array_equal(first.counts, smooth.certify(x, n=2_000, seed=8).counts)
    assert smooth.predict(x, n=2_000, alpha=ALPHA, seed=7) == smooth.predict(x, n=2_000, alpha=ALPHA, seed=7)


def test_pixel_space_isotropic_smoothing_and_progress():
    weights = np.random.default_rng(2).standard_normal((8, 8, 3)).astype(np.float32)
    shapes, events = [], []

    def classify(batch):
        shapes.append((batch.shape, batch.dtype))
        return (np.einsum("bhwc,hwc->b", batch - 0.5, weights) > 0).astype(np.int64)

    image = np.clip(0.5 + 0.02 * weights, 0, 1)
    smooth = Smooth(classify, 2, sigma=0.25, batch_size=300)
    certificate = smooth.certify(image, n0=100, n=1_000, seed=0, progress=events.append)
    assert shapes[0] == ((100, 8, 8, 3), np.float32) and shapes[-1][0] == (100, 8, 8, 3)
    assert [e.step for e in events] == [1, 2, 3, 4, 5] and {e.total for e in events} == {5}
    assert [e.stage for e in events] == ["select"] + ["estimate"] * 4
    # The true L2 distance to the (smoothed = base) linear boundary bounds the certified radius.
    distance = np.einsum("hwc,hwc->", image - 0.5, weights) / np.linalg.norm(weights)
    assert certificate.predicted == 1 and 0.5 * distance < certificate.radius <= distance
    assert certificate.radius == certificate.equal_volume_radius and certificate.radius_m is None


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: Smooth(_constant, 2, sigma=0.1, noise="laplace"),
            "Received: noise='laplace'. Known: isotropic",
        ),
        (lambda: Smooth(_constant, 2, sigma=0.1, noise="anisotropic"), "Received: ellipsoid=None"),
        (
            lambda: Smooth(_constant, 2, sigma=0.1, noise="anisotropic-source", ellipsoid=_general_region()),
            "needs a diagonal M",
        ),
        (lambda: Smooth(_constant, 2, sigma=0.0), "Received: sigma=0.0"),
        (lambda: Smooth(_constant, 1, sigma=0.1), "Received: num_classes=1"),
        (lambda: Smooth(_constant, 2, sigma=0.1, batch_size=0), "Received: batch_size=0"),
        (
            lambda: Smooth(_constant, 2, sigma=0.1, ellipsoid=_source_region()).certify(np.zeros(3)),
            r"x.shape=\(3,\)",
        ),
        (lambda: Smooth(_constant, 2, sigma=0.1).certify(np.zeros(5), alpha=0), "Received: alpha=0"),
        (lambda: Smooth(lambda b: np.zeros(len(b)), 2, sigma=0.1).certify(np.zeros(5)), "dtype=float64"),
        (lambda: Smooth(lambda b: np.full(len(b), 2), 2, sigma=0.1).certify(np.zeros(5)), "max=2"),
        (lambda: clopper_pearson_lower(11, 10, ALPHA), "Received: successes=11, trials=10"),
    ],
)
def test_errors_say_what_was_received(make, match):
    with pytest.raises(AdvfaceError, match=match):
        make()
