"""The perturbation region of semantic attacks: an ellipsoid of attribute coefficients.

A semantic perturbation moves a latent code along ``k`` attribute directions, ``w + D delta``; the
coefficients ``delta`` are allowed in the ellipsoid ``{delta : delta^T M delta <= 1}`` with ``M``
symmetric positive definite (Rojas-Gomez et al., "Certifying and improving the robustness of face
recognition to semantic perturbations", the source of ``juancprzs/certifyingFaceRecognition``). With
per-attribute budgets ``m`` (how far each attribute may move) ``M = diag(1 / m^2)``; the source builds it
as the minimum-volume ellipsoid enclosing ``+-m_i e_i``, which is the same matrix. The size of a
perturbation is its M-norm ``||delta||_M = sqrt(delta^T M delta)`` (the paper's ``||delta||_{M,2}``).

:class:`Ellipsoid` holds ``M`` and gives what attacks and certificates need: norms (numpy and a
differentiable TensorFlow version), the exact Euclidean projection (numpy and a graph-safe TensorFlow
version), radial scaling to the surface, and uniform samples in the volume or on the surface.

Example:
    >>> region = Ellipsoid.from_budgets({"age": 0.5, "eyeglasses": 0.5, "gender": 0.2, "pose": 0.5,
    ...                                  "smile": 0.8})
    >>> region.project(np.ones(5)).round(6)
    array([0.232476, 0.232476, 0.046223, 0.232476, 0.436747])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import tensorflow as tf

from advface.errors import AdvfaceError

# Newton steps of project_tf. From the lower end of the bracket Newton on 1 - 1/||x(t)||_M converges
# monotonically and quadratically; 11 steps sufficed in float64 for condition numbers up to 1e9 and points
# from 1e-3 to 1e8 away, so 30 leaves a wide margin at no measurable cost.
_TF_NEWTON_STEPS = 30
# project() stops a point's iteration when a Newton step changes t by less than this, relative to t.
_RELATIVE_STEP = 1e-15
_MAX_NEWTON_STEPS = 100


@dataclass(frozen=True)
class Ellipsoid:
    """The region ``{delta in R^k : delta^T M delta <= 1}`` of attribute coefficients.

    Attributes:
        matrix: ``(k, k)`` float64 ``M``, symmetric positive definite (stored read-only).
        names: attribute names, one per coordinate, or ``()``.

    Two ellipsoids are equal when their matrices and names are.
    """

    matrix: np.ndarray
    names: tuple[str, ...] = ()

    def __post_init__(self):
        matrix = np.array(self.matrix, dtype=np.float64)  # a private copy
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise AdvfaceError(
                f"An ellipsoid needs a square (k, k) matrix M with k >= 1. Received: matrix.shape="
                f"{matrix.shape}. Build it with Ellipsoid.from_budgets(budgets) for per-attribute budgets."
            )
        if not np.all(np.isfinite(matrix)):
            raise AdvfaceError(
                "The ellipsoid matrix M has non-finite entries. Received: matrix=" + str(matrix)
            )
        scale = np.abs(matrix).max()
        if np.abs(matrix - matrix.T).max() > 1e-10 * scale:
            raise AdvfaceError(
                "The ellipsoid matrix M must be symmetric. Received: max |M - M^T| = "
                f"{np.abs(matrix - matrix.T).max():.3g}. Use (M + M.T) / 2 if the asymmetry is rounding."
            )
        matrix = (matrix + matrix.T) / 2
        smallest = np.linalg.eigvalsh(matrix)[0]
        if not smallest > 0:
            raise AdvfaceError(
                "The ellipsoid matrix M must be positive definite (else the region is unbounded). Received: "
                f"smallest eigenvalue={smallest:.3g}. Check that every budget is positive and finite."
            )
        matrix.setflags(write=False)
        names = tuple(str(n) for n in self.names)
        if names and len(names) != matrix.shape[0]:
            raise AdvfaceError(
                f"Give one name per coordinate or none. Received: names={names} for k={matrix.shape[0]}."
            )
        if len(set(names)) != len(names):
            raise AdvfaceError(f"Attribute names must be distinct. Received: names={names}.")
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "names", names)

    def __eq__(self, other):
        if not isinstance(other, Ellipsoid):
            return NotImplemented
        return self.names == other.names and np.array_equal(self.matrix, other.matrix)

    def __hash__(self):
        return hash((self.names, self.matrix.tobytes()))

    # ---------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_budgets(cls, budgets, names=None, *, scale: float = 1.0) -> Ellipsoid:
        """The axis-aligned ellipsoid of per-attribute budgets: ``M = scale * diag(1 / m^2)``.

        Args:
            budgets: a mapping ``name -> m`` or a sequence of ``m``, each ``m > 0``: how far attribute
                ``i`` may move alone.
            names: attribute names; for a mapping they pick and order its entries (default: its order).
            scale: the source's ``--scale-factor``; the region shrinks by ``sqrt(scale)``.

        Returns:
            The ellipsoid, which is the minimum-volume one enclosing ``+-m_i e_i`` when ``scale = 1``.
        """
        if isinstance(budgets, Mapping):
            order = tuple(budgets) if names is None else tuple(names)
            missing = [n for n in order if n not in budgets]
            if missing:
                raise AdvfaceError(
                    f"No budget for {missing}. Received: names={order}, budgets for {tuple(budgets)}."
                )
            values = [budgets[n] for n in order]
            names = order
        else:
            values = list(np.asarray(budgets, dtype=np.float64).reshape(-1))
            names = () if names is None else tuple(names)
        m = np.asarray(values, dtype=np.float64)
        if m.size == 0 or not np.all(np.isfinite(m)) or np.any(m <= 0):
            raise AdvfaceError(
                f"Budgets must be positive and finite, at least one. Received: budgets={m.tolist()}."
            )
        if not (np.isfinite(scale) and scale > 0):
            raise AdvfaceError(f"scale must be positive and finite. Received: scale={scale}.")
        return cls(np.diag(scale * (1 / m) ** 2), names)

    @classmethod
    def mvee(cls, points, *, tol: float = 1e-7, names=(), max_steps: int = 100_000) -> Ellipsoid:
        """The minimum-volume ellipsoid centred at 0 that encloses ``points`` (Khachiyan's algorithm).

        Khachiyan's first-order method on the D-optimal design weights ``u`` (Khachiyan, "Rounding of
        polytopes in the real number model of computation", 1996), with the away steps of Todd and
        Yildirim ("On Khachiyan's algorithm for the computation of minimum-volume enclosing ellipsoids",
        2007). With ``X(u) = sum_i u_i p_i p_i^T`` and ``w_i = p_i^T X^-1 p_i`` it stops when
        ``max_i w_i <= k (1 + tol)`` and returns ``M = X^-1 / max_i w_i``, which encloses every point
        exactly (the textbook ``X^-1 / k`` does only at convergence). For the points ``+-m_i e_i`` the
        uniform start is already optimal and ``M = diag(1 / m^2)`` (to rounding), as in the source.

        Args:
            points: ``(P, k)`` points that span ``R^k``.
            tol: relative optimality tolerance.
            names: attribute names, one per coordinate, or ``()``.
            max_steps: iterations before giving up.
        """
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] < p.shape[1] or not np.all(np.isfinite(p)):
            raise AdvfaceError(
                "mvee needs finite points of shape (P, k) with P >= k. Received: points.shape="
                f"{np.shape(points)}."
            )
        if not (0 < tol < 1):
            raise AdvfaceError(f"tol must lie in (0, 1). Received: tol={tol}.")
        count, k = p.shape
        if np.linalg.matrix_rank(p) < k:
            raise AdvfaceError(
                f"The points must span R^{k}, else no bounded ellipsoid encloses them with positive volume. "
                f"Received: points of rank {np.linalg.matrix_rank(p)}. Drop the coordinates they never move."
            )
        u = np.full(count, 1.0 / count)
        for _ in range(max_steps):
            # 1. The leverages w_i = p_i^T X(u)^-1 p_i.
            inverse = np.linalg.inv(p.T @ (u[:, None] * p))
            w = np.einsum("ij,jk,ik->i", p, inverse, p)
            j = int(np.argmax(w))
            if w[j] <= k * (1 + tol):
                break
            # 2. Toward the most violated point, or away from the least useful weighted one, whichever
            #    promises more (exact line search on log det X for both).
            held = np.flatnonzero(u > 0)
            i = held[np.argmin(w[held])]
            if w[j] - k >= k - w[i]:
                step = (w[j] - k) / (k * (w[j] - 1))
                u *= 1 - step
                u[j] += step
            else:
                drop = u[i] / (1 - u[i])
                step = drop if w[i] <= 1 else min((k - w[i]) / (k * (w[i] - 1)), drop)
                u *= 1 + step
                u[i] = 0.0 if step == drop else u[i] - step
        else:
            raise AdvfaceError(
                f"mvee did not reach tol={tol} in {max_steps} steps. Received: {count} points in R^{k}. "
                "Raise max_steps or tol."
            )
        return cls(inverse / w[j], names)

    # ---------------------------------------------------------------------------------------------
    # Properties

    @property
    def k(self) -> int:
        """The number of coordinates."""
        return int(self.matrix.shape[0])

    @cached_property
    def _eigen(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues ``(k,)`` ascending and eigenvectors ``(k, k)`` (columns) of ``M``."""
        values, vectors = np.linalg.eigh(self.matrix)
        return values, vectors

    @cached_property
    def inverse(self) -> np.ndarray:
        """``M^-1``, ``(k, k)`` float64 (for budgets, ``diag(m^2)``)."""
        values, vectors = self._eigen
        inverse = (vectors / values) @ vectors.T
        if np.count_nonzero(self.matrix - np.diag(np.diag(self.matrix))) == 0:
            inverse = np.diag(1 / np.diag(self.matrix))  # exact for the diagonal case
        inverse = (inverse + inverse.T) / 2
        inverse.setflags(write=False)
        return inverse

    @cached_property
    def _cholesky(self) -> np.ndarray:
        """Lower-triangular ``L`` with ``M = L L^T``."""
        return np.linalg.cholesky(self.matrix)

    # ---------------------------------------------------------------------------------------------
    # Norms

    def _coefficients(self, delta, what: str) -> np.ndarray:
        array = np.asarray(delta, dtype=np.float64)
        if array.ndim == 0 or array.shape[-1] != self.k:
            raise AdvfaceError(
                f"{what} takes coefficient vectors (..., {self.k}). Received: delta.shape={np.shape(delta)}."
            )
        return array

    def norm(self, delta) -> np.ndarray:
        """``||delta||_M = sqrt(delta^T M delta)`` over the last axis.

        Args:
            delta: ``(..., k)`` coefficients.

        Returns:
            ``(...)`` float64 norms.
        """
        d = self._coefficients(delta, "norm")
        return np.sqrt(np.maximum(np.einsum("...i,ij,...j->...", d, self.matrix, d), 0.0))

    def clamp_coordinate(self, delta, index: int, value: float) -> float:
        """``value`` for coordinate ``index`` of ``delta``, moved towards 0 just enough that the offset
        stays in the ellipsoid (the other coordinates, already inside, are kept): moving one attribute
        slider within the budget.

        Solves ``M_ii t^2 + 2 b t + c <= 1`` with ``b = sum_{j != i} M_ij d_j`` and ``c`` the quadratic form
        of the other coordinates.
        """
        rest = self._coefficients(delta, "clamp_coordinate").copy()
        if rest.ndim != 1:
            raise AdvfaceError(f"clamp_coordinate takes one offset ({self.k},). Received: {rest.shape}.")
        rest[index] = 0.0
        a = float(self.matrix[index, index])
        b = float(self.matrix[index] @ rest)
        c = float(rest @ self.matrix @ rest)
        root = np.sqrt(max(b * b - a * (c - 1.0), 0.0))
        low, high = (-b - root) / a, (-b + root) / a
        return float(np.clip(value, min(low, 0.0), max(high, 0.0)))

    def norm_tf(self, delta) -> tf.Tensor:
        """``||delta||_M`` in TensorFlow float32, differentiable and usable inside ``tf.function``.

        The gradient at ``delta = 0``, where the norm has none, is 0 (a subgradient), not NaN.

        Args:
            delta: ``(..., k)`` tensor or array.

        Returns:
            ``(...)`` float32 tensor.
        """
        d = tf.cast(tf.convert_to_tensor(delta), tf.float32)
        if d.shape.rank is not None and (d.shape.rank == 0 or d.shape[-1] not in (None, self.k)):
            raise AdvfaceError(
                f"norm_tf takes coefficient vectors (..., {self.k}). Received: delta.shape={d.shape}."
            )
        squared = tf.einsum("...i,ij,...j->...", d, tf.constant(self.matrix, tf.float32), d)
        positive = squared > 0
        return tf.where(positive, tf.sqrt(tf.where(positive, squared, tf.ones_like(squared))), 0.0)

    # ---------------------------------------------------------------------------------------------
    # Projection

    def project(self, delta) -> np.ndarray:
        """The exact Euclidean projection onto the ellipsoid: ``argmin_x ||x - y||_2`` s.t. ``||x||_M <= 1``.

        Points inside are returned unchanged. For ``y`` outside, the KKT conditions give
        ``x = (I + t M)^-1 y`` with ``t > 0`` the root of ``||x(t)||_M = 1``; in M's eigenbasis
        (``M = Q diag(lambda) Q^T``, ``y' = Q^T y``) that is
        ``sum_i lambda_i y'_i^2 / (1 + t lambda_i)^2 = 1``. The root lies in the bracket
        ``[(s - 1) / lambda_max, (s - 1) / lambda_min]`` with ``s = ||y||_M``; Newton's method on the
        convex, decreasing ``1 - 1 / ||x(t)||_M`` (the trust-region secular equation of Moré and
        Sorensen, 1983) from its lower end converges monotonically and quadratically, so no point can
        fall out of the bracket or be left unprojected (the source's fixed bisection bracket could).

        Args:
            delta: ``(N, k)`` or ``(k,)`` (any ``(..., k)``) coefficients.

        Returns:
            float64 array of ``delta``'s shape with ``||x||_M <= 1`` (``= 1`` up to rounding for points
            that were outside).
        """
        y = self._coefficients(delta, "project")
        if not np.all(np.isfinite(y)):
            raise AdvfaceError(
                "project needs finite coefficients. Received: delta with "
                f"{int(np.sum(~np.isfinite(y)))} NaN or infinite entries. Check the step that produced them."
            )
        shape = y.shape
        y = y.reshape(-1, self.k)
        values, vectors = self._eigen
        # 1. Which points are outside (as norm() says), and their bracket's lower end.
        outside = self.norm(y) > 1
        x = y.copy()
        if outside.any():
            yp = y[outside] @ vectors
            weighted = values * yp**2
            t = np.maximum(np.sqrt(weighted.sum(-1)) - 1, 0.0) / values[-1]
            # 2. Newton on 1 - 1/||x(t)||_M, only for points whose t still moves.
            active = np.ones(len(t), dtype=bool)
            for _ in range(_MAX_NEWTON_STEPS):
                step = _newton_step(t[active], values, weighted[active])
                t[active] += step
                active[active] = step > _RELATIVE_STEP * t[active]
                if not active.any():
                    break
            assert not active.any(), "Newton did not converge; the iteration is monotone and quadratic"
            # 3. Back to the original basis; rounding can leave ||x||_M a few ulps above 1.
            projected = (yp / (1 + t[:, None] * values)) @ vectors.T
            x[outside] = projected / np.maximum(self.norm(projected), 1.0)[:, None]
        return x.reshape(shape)

    def project_tf(self, delta) -> tf.Tensor:
        """:meth:`project` in TensorFlow, graph-safe: a fixed number of vectorised Newton steps.

        Computed in float64 internally (the secular equation loses digits in float32 when M is badly
        conditioned) and returned as float32; it agrees with :meth:`project` to float32 rounding.

        Args:
            delta: ``(N, k)`` or ``(k,)`` (any ``(..., k)``) tensor or array.

        Returns:
            float32 tensor of ``delta``'s shape.
        """
        d = tf.convert_to_tensor(delta)
        if d.shape.rank is not None and (d.shape.rank == 0 or d.shape[-1] not in (None, self.k)):
            raise AdvfaceError(
                f"project_tf takes coefficient vectors (..., {self.k}). Received: delta.shape={d.shape}."
            )
        values_np, vectors_np = self._eigen
        values = tf.constant(values_np, tf.float64)
        vectors = tf.constant(vectors_np, tf.float64)
        y = tf.reshape(tf.cast(d, tf.float64), (-1, self.k))
        # 1. Eigenbasis, the points outside and their bracket [lower, upper].
        yp = tf.matmul(y, vectors)
        weighted = values * yp**2
        norm0 = tf.sqrt(tf.reduce_sum(weighted, -1))
        outside = tf.reduce_sum(tf.matmul(y, self.matrix) * y, -1) > 1
        lower = tf.maximum(norm0 - 1, 0.0) / values[-1]
        upper = tf.maximum(norm0 - 1, 0.0) / values[0]
        # 2. A fixed number of Newton steps, kept inside the bracket.
        t = lower
        for _ in range(_TF_NEWTON_STEPS):
            t = tf.clip_by_value(t + _newton_step_tf(t, values, weighted), lower, upper)
        # 3. Back to the original basis, points inside untouched.
        projected = tf.matmul(yp / (1 + t[:, None] * values), vectors, transpose_b=True)
        scale = tf.sqrt(tf.reduce_sum(tf.matmul(projected, self.matrix) * projected, -1))
        projected = projected / tf.maximum(scale, 1.0)[:, None]
        x = tf.where(outside[:, None], projected, y)
        return tf.reshape(tf.cast(x, tf.float32), tf.shape(d))

    # ---------------------------------------------------------------------------------------------
    # Surface and sampling

    def to_surface(self, delta) -> np.ndarray:
        """Radial scaling onto the surface: ``delta / ||delta||_M``.

        Args:
            delta: ``(..., k)`` coefficients, none of them zero (a zero vector has no direction).

        Returns:
            float64 array of ``delta``'s shape with ``||.||_M = 1`` (to rounding).
        """
        d = self._coefficients(delta, "to_surface")
        norms = self.norm(d)
        if np.any(norms == 0):
            raise AdvfaceError(
                "to_surface cannot scale a zero vector: it has no direction. Received: "
                f"{int(np.sum(norms == 0))} zero rows. Give nonzero coefficients, or use sample_surface."
            )
        return d / norms[..., None]

    def from_ball(self, points) -> np.ndarray:
        """Map the unit Euclidean ball onto the ellipsoid: ``delta = L^-T x`` where ``M = L L^T``.

        The map is linear, so it carries uniform samples to uniform samples and ``||delta||_M = ||x||_2``.
        With ``x ~ N(0, I)`` it gives ``delta ~ N(0, M^-1)``.

        Args:
            points: ``(..., k)`` points.
        """
        x = self._coefficients(points, "from_ball")
        shape = x.shape
        # delta^T = x^T L^-1: solve L^T delta = x for every row.
        rows = np.linalg.solve(self._cholesky.T, x.reshape(-1, self.k).T).T
        return rows.reshape(shape)

    def sample_inside(self, n: int, seed: int) -> np.ndarray:
        """``n`` points uniform in the volume: Gaussian direction, radius ``U^(1/k)``, mapped by ``L^-T``.

        Returns:
            ``(n, k)`` float64 with ``||.||_M <= 1``, ``P(||.||_M <= r) = r^k``.
        """
        rng = np.random.default_rng(seed)
        directions = self._directions(n, rng)
        radii = rng.uniform(size=(len(directions), 1)) ** (1.0 / self.k)
        return self.from_ball(directions * radii)

    def sample_surface(self, n: int, seed: int) -> np.ndarray:
        """``n`` points on the surface ``||.||_M = 1`` (uniform direction in the whitened coordinates).

        Returns:
            ``(n, k)`` float64.
        """
        return self.from_ball(self._directions(n, np.random.default_rng(seed)))

    def _directions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise AdvfaceError(f"n must be a non-negative integer. Received: n={n}.")
        gaussian = rng.standard_normal((int(n), self.k))
        norms = np.linalg.norm(gaussian, axis=1, keepdims=True)
        return gaussian / np.where(norms > 0, norms, 1.0)

    def scaled(self, factor: float) -> Ellipsoid:
        """The region ``||delta||_M <= factor``, i.e. matrix ``M / factor^2``."""
        if not (np.isfinite(factor) and factor > 0):
            raise AdvfaceError(f"factor must be positive and finite. Received: factor={factor}.")
        return Ellipsoid(self.matrix / float(factor) ** 2, self.names)


def _newton_step(t: np.ndarray, values: np.ndarray, weighted: np.ndarray) -> np.ndarray:
    """Newton step on ``F(t) = 1 - 1/sqrt(h(t))``, ``h(t) = sum_i lambda_i y'_i^2 / (1 + t lambda_i)^2``.

    Args:
        t: ``(B,)`` current multipliers, left of the root.
        values: ``(k,)`` eigenvalues ``lambda``.
        weighted: ``(B, k)`` ``lambda_i y'_i^2``.

    Returns:
        ``(B,)`` steps ``-F/F' = 2 h (sqrt(h) - 1) / |h'|`` (non-negative).
    """
    denominator = 1 + t[:, None] * values
    h = (weighted / denominator**2).sum(-1)
    slope = 2 * (weighted * values / denominator**3).sum(-1)
    return np.maximum(2 * h * (np.sqrt(h) - 1) / slope, 0.0)


def _newton_step_tf(t: tf.Tensor, values: tf.Tensor, weighted: tf.Tensor) -> tf.Tensor:
    """:func:`_newton_step` in TensorFlow; 0 where there is nothing to do (points inside, zeros)."""
    denominator = 1 + t[:, None] * values
    h = tf.reduce_sum(weighted / denominator**2, -1)
    slope = 2 * tf.reduce_sum(weighted * values / denominator**3, -1)
    return tf.maximum(tf.math.divide_no_nan(2 * h * (tf.sqrt(h) - 1), slope), 0.0)
