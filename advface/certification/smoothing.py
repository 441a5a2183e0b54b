"""Randomized smoothing (Cohen, Rosenfeld, Kolter, "Certified adversarial robustness via randomized
smoothing", ICML 2019).

The smoothed classifier ``g(x) = argmax_c P(f(x + noise) = c)`` of a base classifier ``f`` is robust: if
the top class has probability ``p_A > 1/2`` under Gaussian noise ``N(0, C)``, ``g`` does not change for
any ``delta`` with ``||C^-1/2 delta||_2 < Phi^-1(p_A)`` (Cohen et al., Theorem 1 in whitened coordinates).
:meth:`Smooth.certify` bounds ``p_A`` from below by Monte Carlo with a one-sided Clopper-Pearson bound,
so the certificate holds with probability at least ``1 - alpha`` (Cohen et al., CERTIFY); the gap
``Phi^-1(p_lower)`` times the noise scale is the certified radius.

Three noises, for attribute coefficients ``delta`` with a budget ellipsoid ``||delta||_M <= 1``
(:class:`advface.semantic.budget.Ellipsoid`), or for any input with isotropic noise:

==================  ======================  ===========================================================
noise               covariance C            certified region
==================  ======================  ===========================================================
isotropic           ``sigma^2 I``           the L2 ball of radius ``sigma * gap`` (input units)
anisotropic         ``sigma^2 M^-1``        the M-ball ``||delta||_M <= sigma * gap``: the M-consistent
                                            choice, certifying in the norm the attacks use
anisotropic-source  ``diag(sigma m_i^2)^2`` ``||delta / (sigma m^2)||_2 <= gap`` with
                                            ``m_i^2 = (M^-1)_ii``: what certifyingFaceRecognition did,
                                            kept for comparison (its std is ``sigma m_i^2``, not the
                                            M-consistent ``sigma m_i``); diagonal M only
==================  ======================  ===========================================================

Every certificate reports the certified region three ways: ``radius``, the largest Euclidean ball inside
it; ``radius_m``, the largest M-ball inside it (comparable with attack magnitudes); and
``equal_volume_radius``, the radius of the ball with the region's volume, ``gap * (prod_i std_i)^(1/k)``
(the source multiplied by a spurious ``V_k^(1/k)``, 39 % too large for k = 5).

Example:
    >>> smooth = Smooth(classify, 10, sigma=0.25, noise="anisotropic", ellipsoid=region)
    >>> certificate = smooth.certify(np.zeros(5, np.float32), n=10_000, alpha=0.001, seed=0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from advface.errors import AdvfaceError
from advface.progress import ProgressCallback, report
from advface.semantic.budget import Ellipsoid

ABSTAIN = -1
NOISES = ("isotropic", "anisotropic", "anisotropic-source")


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound on a binomial proportion.

    ``P(p >= bound) >= 1 - alpha``; equal to statsmodels'
    ``proportion_confint(successes, trials, alpha=2 * alpha, method="beta")[0]``.

    Args:
        successes: ``0 <= successes <= trials``.
        trials: ``>= 1``.
        alpha: in ``(0, 1)``.

    Returns:
        The bound in ``[0, 1)``: ``Beta(alpha; successes, trials - successes + 1)``, 0 for no success.
    """
    successes, trials = _count("successes", successes), _count("trials", trials)
    if trials < 1 or successes > trials:
        raise AdvfaceError(
            f"Need 0 <= successes <= trials and trials >= 1. Received: successes={successes}, "
            f"trials={trials}."
        )
    _check_alpha(alpha)
    if successes == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, successes, trials - successes + 1))


def min_trials(alpha: float) -> int:
    """The smallest ``N`` for which ``N`` successes in ``N`` trials certify anything.

    All successes give the lower bound ``alpha^(1/N)``, which exceeds 1/2 only for
    ``N > log2(1/alpha)`` (10 at ``alpha = 0.001``); with fewer samples every call abstains.
    """
    _check_alpha(alpha)
    n = max(int(math.floor(math.log2(1 / alpha))) + 1, 1)
    while alpha ** (1 / n) <= 0.5:  # guard the floor against rounding at exact powers of two
        n += 1
    while n > 1 and alpha ** (1 / (n - 1)) > 0.5:
        n -= 1
    return n


@dataclass(frozen=True)
class Certificate:
    """The outcome of :meth:`Smooth.certify` for one input.

    Attributes:
        predicted: the smoothed prediction, or ``-1`` when abstaining.
        p_lower: one-sided ``1 - alpha`` lower bound on the top class's probability under noise.
        gap: ``Phi^-1(p_lower)``, the radius in the noise's whitened units (0 when abstaining).
        radius: the largest Euclidean ball (input or coefficient units) inside the certified region.
        radius_m: the largest M-ball ``||delta||_M <= radius_m`` inside it (``None`` without an ellipsoid).
        equal_volume_radius: radius of the ball with the certified region's volume,
            ``gap * (prod_i std_i)^(1/k)`` over the noise's principal standard deviations (``= radius``
            for isotropic noise).
        counts: ``(num_classes,)`` int64 class counts of the estimation samples.
        n0: selection samples.
        n: estimation samples.
        alpha: failure probability of the certificate.
        seconds: wall time.
        warning: why the result may be uninformative (e.g. ``n`` too small to certify at ``alpha``).

    Equality ignores ``counts`` and ``seconds``: two runs with one seed give equal certificates.
    """

    predicted: int
    p_lower: float
    gap: float
    radius: float
    radius_m: float | None
    equal_volume_radius: float | None
    counts: np.ndarray = field(compare=False, repr=False)
    n0: int
    n: int
    alpha: float
    seconds: float = field(compare=False)
    warning: str = ""

    @property
    def abstained(self) -> bool:
        return self.predicted == ABSTAIN


class Smooth:
    """The smoothed classifier ``g(x) = argmax_c P(f(x + noise) = c)`` (Cohen et al., ICML 2019).

    Args:
        classify: the base classifier ``f``: a callable taking a float32 numpy batch ``(B, *shape)`` and
            returning ``(B,)`` integer classes in ``[0, num_classes)``. It sees unclipped noisy inputs.
        num_classes: the number of classes ``f`` can return.
        sigma: the noise level (see ``noise``).
        noise: ``"isotropic"`` ``N(0, sigma^2 I)``; ``"anisotropic"`` ``N(0, sigma^2 M^-1)``, which
            certifies the M-ball ``||delta||_M <= sigma * gap``; or ``"anisotropic-source"``, independent
            coordinates with std ``sigma * (M^-1)_ii`` (``sigma m_i^2``; the source's choice, diagonal M
            only, for comparison).
        ellipsoid: the attacks' budget region; required by the anisotropic noises, optional for isotropic
            noise (it adds ``radius_m``). Inputs are then ``(k,)`` coefficient vectors.
        batch_size: noisy samples per call of ``classify``.

    Example:
        >>> smooth = Smooth(classify, 3, sigma=0.5)
        >>> certificate = smooth.certify(x, n0=100, n=10_000, alpha=0.001, seed=0)
        >>> certificate.predicted, certificate.radius
    """

    def __init__(
        self,
        classify: Callable[[np.ndarray], np.ndarray],
        num_classes: int,
        *,
        sigma: float,
        noise: str = "isotropic",
        ellipsoid: Ellipsoid | None = None,
        batch_size: int = 1000,
    ):
        if not callable(classify):
            raise AdvfaceError(
                f"classify must be a callable (B, ...) -> (B,) classes. Received: classify={classify!r}."
            )
        if _count("num_classes", num_classes) < 2:
            raise AdvfaceError(f"Smoothing needs at least 2 classes. Received: num_classes={num_classes}.")
        if isinstance(sigma, bool) or not (np.isfinite(sigma) and sigma > 0):
            raise AdvfaceError(f"sigma must be positive and finite. Received: sigma={sigma}.")
        if noise not in NOISES:
            raise AdvfaceError(f"Unknown noise. Received: noise={noise!r}. Known: {', '.join(NOISES)}.")
        if ellipsoid is not None and not isinstance(ellipsoid, Ellipsoid):
            raise AdvfaceError(
                f"ellipsoid must be an advface.semantic.budget.Ellipsoid. Received: ellipsoid={ellipsoid!r}."
            )
        if noise != "isotropic" and ellipsoid is None:
            raise AdvfaceError(
                f"noise={noise!r} is shaped by the budget matrix M. Received: ellipsoid=None. Pass "
                "ellipsoid=Ellipsoid.from_budgets(...), or use noise='isotropic'."
            )
        if noise == "anisotropic-source" and np.count_nonzero(
            ellipsoid.matrix - np.diag(ellipsoid.matrix.diagonal())
        ):
            raise AdvfaceError(
                "noise='anisotropic-source' (per-coordinate std sigma * m_i^2) needs a diagonal M. Received: "
                "a non-diagonal ellipsoid. Use noise='anisotropic' (covariance sigma^2 M^-1)."
            )
        if _count("batch_size", batch_size) < 1:
            raise AdvfaceError(f"batch_size must be at least 1. Received: batch_size={batch_size}.")
        self.classify = classify
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.noise = noise
        self.ellipsoid = ellipsoid
        self.batch_size = int(batch_size)

    # ---------------------------------------------------------------------------------------------
    # The noise

    @property
    def principal_std(self) -> np.ndarray:
        """The noise's standard deviations along its principal axes, ``(k,)``.

        ``"anisotropic"``: ``sigma / sqrt(lambda_i(M))`` along M's eigenvectors (ascending eigenvalues);
        ``"anisotropic-source"``: ``sigma m_i^2`` per coordinate; isotropic: ``sigma`` repeated, or just
        ``[sigma]`` without an ellipsoid (any input size).
        """
        if self.noise == "isotropic":
            return np.full(1 if self.ellipsoid is None else self.ellipsoid.k, self.sigma)
        if self.noise == "anisotropic":
            return self.sigma / np.sqrt(np.linalg.eigvalsh(self.ellipsoid.matrix))
        return self._source_std

    @property
    def _source_std(self) -> np.ndarray:
        """Per-coordinate std of ``"anisotropic-source"``: ``sigma * (M^-1)_ii`` = ``sigma m_i^2``."""
        return self.sigma * np.diag(self.ellipsoid.inverse)

    def _draw(self, rng: np.random.Generator, count: int, shape: tuple[int, ...]) -> np.ndarray:
        """``(count, *shape)`` float32 noise."""
        if self.noise == "isotropic":
            return self.sigma * rng.standard_normal((count, *shape), dtype=np.float32)
        z = rng.standard_normal((count, self.ellipsoid.k))
        if self.noise == "anisotropic":
            # z ~ N(0, I) -> L^-T z ~ N(0, M^-1) with M = L L^T.
            return (self.sigma * self.ellipsoid.from_ball(z)).astype(np.float32)
        return (z * self._source_std).astype(np.float32)

    def _radii(self, gap: float) -> tuple[float, float | None, float]:
        """``(radius, radius_m, equal_volume_radius)`` of the region ``delta^T C^-1 delta <= gap^2``.

        The largest L2 ball inside it has radius ``gap sqrt(lambda_min(C))``, the largest M-ball
        ``gap sqrt(lambda_min(M C))``, and the equal-volume ball ``gap det(C)^(1/2k)``.
        """
        region = self.ellipsoid
        equal_volume = gap * float(np.exp(np.mean(np.log(self.principal_std))))
        if self.noise == "isotropic":
            radius = self.sigma * gap
            radius_m = None if region is None else radius * math.sqrt(np.linalg.eigvalsh(region.matrix)[0])
            return radius, radius_m, radius
        if self.noise == "anisotropic":
            radius_m = self.sigma * gap
            return radius_m / math.sqrt(np.linalg.eigvalsh(region.matrix)[-1]), radius_m, equal_volume
        std = self._source_std
        radius_m = gap * float(np.min(std * np.sqrt(np.diag(region.matrix))))
        return gap * float(np.min(std)), radius_m, equal_volume

    # ---------------------------------------------------------------------------------------------
    # Cohen et al.'s CERTIFY and PREDICT

    def certify(
        self,
        x,
        *,
        n0: int = 100,
        n: int = 10_000,
        alpha: float = 0.001,
        seed: int = 0,
        progress: ProgressCallback | None = None,
    ) -> Certificate:
        """Cohen et al.'s CERTIFY: the smoothed prediction at ``x`` and a radius in which it is constant.

        With probability at least ``1 - alpha`` over the noise, either the call abstains or the smoothed
        classifier returns ``predicted`` everywhere in the certified region around ``x``.

        Args:
            x: one input, ``(k,)`` coefficients (with an ellipsoid) or any shape, e.g. an ``(H, W, 3)``
                aligned chip in ``[0, 1]`` (isotropic noise only).
            n0: selection samples (they pick the top class).
            n: estimation samples (they bound its probability); below :func:`min_trials` the result
                always abstains and carries a warning.
            alpha: failure probability.
            seed: seeds the noise (``numpy.random.default_rng``).
            progress: called once per batch of noisy samples (stages ``"select"`` and ``"estimate"``).

        Returns:
            A :class:`Certificate`; ``predicted = -1`` (abstain) when ``p_lower < 1/2``.
        """
        start = time.perf_counter()
        x = self._input(x)
        n0, n = _count("n0", n0), _count("n", n)
        if n0 < 1 or n < 1:
            raise AdvfaceError(f"Need n0 >= 1 and n >= 1 samples. Received: n0={n0}, n={n}.")
        _check_alpha(alpha)
        warning = ""
        if n < min_trials(alpha):
            warning = (
                f"n={n} estimation samples can never certify at alpha={alpha}: even {n}/{n} successes give "
                f"a lower bound <= 1/2. Use n >= {min_trials(alpha)} (thousands for useful radii)."
            )
        rng = np.random.default_rng(seed)
        total = -(-n0 // self.batch_size) + -(-n // self.batch_size)
        # 1. Selection: the top class under n0 noisy samples.
        selection = self._counts(x, n0, rng, progress, "select", 0, total)
        top = int(np.argmax(selection))
        # 2. Estimation: n fresh samples bound the top class's probability from below.
        counts = self._counts(x, n, rng, progress, "estimate", -(-n0 // self.batch_size), total)
        p_lower = clopper_pearson_lower(int(counts[top]), n, alpha)
        # 3. Abstain below 1/2, else the radius of Phi^-1(p_lower).
        if p_lower < 0.5:
            radius_m = None if self.ellipsoid is None else 0.0
            predicted, gap, radii = ABSTAIN, 0.0, (0.0, radius_m, 0.0)
        else:
            predicted, gap = top, float(stats.norm.ppf(p_lower))
            radii = self._radii(gap)
        return Certificate(
            predicted=predicted,
            p_lower=p_lower,
            gap=gap,
            radius=float(radii[0]),
            radius_m=None if radii[1] is None else float(radii[1]),
            equal_volume_radius=float(radii[2]),
            counts=counts,
            n0=n0,
            n=n,
            alpha=float(alpha),
            seconds=time.perf_counter() - start,
            warning=warning,
        )

    def predict(
        self, x, *, n: int, alpha: float, seed: int = 0, progress: ProgressCallback | None = None
    ) -> int:
        """Cohen et al.'s PREDICT: the smoothed class, or ``-1`` when the top two are not separable.

        Returns the top class of ``n`` noisy samples if a two-sided binomial test
        (``scipy.stats.binomtest``) of its count against the runner-up's rejects equality at level
        ``alpha``; the probability of returning a class other than ``g(x)`` is then at most ``alpha``.

        Args:
            x: one input, as for :meth:`certify`.
            n: noisy samples.
            alpha: level of the test.
            seed: seeds the noise.
            progress: called once per batch.
        """
        x = self._input(x)
        n = _count("n", n)
        if n < 1:
            raise AdvfaceError(f"Need n >= 1 samples. Received: n={n}.")
        _check_alpha(alpha)
        counts = self._counts(
            x, n, np.random.default_rng(seed), progress, "predict", 0, -(-n // self.batch_size)
        )
        runner_up, top = np.argsort(counts, kind="stable")[-2:]
        if stats.binomtest(int(counts[top]), int(counts[top] + counts[runner_up]), 0.5).pvalue > alpha:
            return ABSTAIN
        return int(top)

    # ---------------------------------------------------------------------------------------------
    # Helpers

    def _input(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.ellipsoid is not None and x.shape != (self.ellipsoid.k,):
            raise AdvfaceError(
                f"With an ellipsoid the input is one coefficient vector of shape ({self.ellipsoid.k},). "
                f"Received: x.shape={x.shape}. Certify one input per call; for images use isotropic noise "
                "without an ellipsoid."
            )
        if x.ndim == 0 or not np.all(np.isfinite(x)):
            raise AdvfaceError(
                f"x must be one finite input of shape (k,) or (H, W, 3). Received: x.shape={x.shape}."
            )
        return x

    def _counts(
        self,
        x: np.ndarray,
        num: int,
        rng: np.random.Generator,
        progress: ProgressCallback | None,
        stage: str,
        done: int,
        total: int,
    ) -> np.ndarray:
        """Class counts of ``f`` on ``num`` noisy copies of ``x``, in batches of ``batch_size``."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        remaining = num
        while remaining > 0:
            size = min(self.batch_size, remaining)
            batch = x[None] + self._draw(rng, size, x.shape)
            classes = np.asarray(self.classify(batch))
            if classes.shape != (size,) or not np.issubdtype(classes.dtype, np.integer):
                raise AdvfaceError(
                    f"classify must return ({size},) integer classes for a batch of {size}. Received: "
                    f"shape={classes.shape}, dtype={classes.dtype}. Return e.g. np.argmax(logits, axis=1)."
                )
            if size and (classes.min() < 0 or classes.max() >= self.num_classes):
                raise AdvfaceError(
                    f"classify returned classes outside [0, {self.num_classes}). Received: "
                    f"min={classes.min()}, max={classes.max()}. Set num_classes to the number of classes."
                )
            counts += np.bincount(classes, minlength=self.num_classes)
            remaining -= size
            done += 1
            report(progress, done, total, stage, samples=int(counts.sum()))
        return counts


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AdvfaceError(f"{name} must be an integer. Received: {name}={value!r}.")
    return int(value)


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not (isinstance(alpha, float | int | np.floating) and 0 < alpha < 1):
        raise AdvfaceError(f"alpha must lie in (0, 1). Received: alpha={alpha!r}.")
