"""Attacks in the space of attribute coefficients: latent PGD and FAB-t in the ellipsoid's M-norm.

A semantic attack perturbs a face's latent code along ``k`` attribute directions, ``w + D delta``, and
looks for coefficients ``delta`` that change the identity a face model gives the rendered face. The region
of allowed perturbations is an ellipsoid ``{delta : delta^T M delta <= 1}``
(:class:`~advface.semantic.budget.Ellipsoid`) and the size of a perturbation its M-norm
``||delta||_M = sqrt(delta^T M delta)`` (Rojas-Gomez et al., "Certifying and improving the robustness of
face recognition to semantic perturbations", the source ``juancprzs/certifyingFaceRecognition``). What is
attacked is a :class:`LatentObjective`: per identity row, logits over the classes (gallery identities,
or the two classes of verification) as a differentiable function of ``delta``; success on a row is
``argmax(logits) != label``.

- :class:`LatentPGD`: projected gradient steps inside the ellipsoid from random starts, the source's
  ``attack-type manual``, with its faults fixed: every iterate is evaluated, the last one of each restart
  included (the source tested before each step, so never the last), and per row the *smallest* successful
  ``delta`` over all steps and restarts is kept (the source kept the first).
- :class:`LatentFAB`: the targeted fast adaptive boundary attack FAB-t (Croce and Hein, "Minimally
  distorted adversarial examples with a fast adaptive boundary attack", ICML 2020) with its projection
  re-derived for the M-norm. The source's ``Lsigma2`` adaptation is not ported: its offset had the wrong
  sign and an M-weighted inner product, and a projected point was added as if it were a step, so its
  norms were not minimal. FAB is not bounded by the ellipsoid; it minimises ``||delta||_M`` and the
  result reports it.

Both attack rows in batches (``batch_size``) with one compiled ``tf.function`` per step; a row's random
starts depend only on ``(seed, row)``, so batching and chunking do not change results. Rows that the
objective already misclassifies at ``delta = 0`` are not attacked: their answer is ``delta = 0``
(success, magnitude 0). Both report progress once per step and let
:class:`~advface.progress.Cancelled` raised by the callback propagate.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf

from advface.attacks.pixel import check_positive, check_range
from advface.errors import AdvfaceError
from advface.progress import ProgressCallback, report

LOSSES = ("xent", "away", "nearest", "diff", "dlr")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
START_OFFSET = 1e-3  # FAB's first start: this far (M-norm) off the clean point, see LatentFAB
_TIE = 1e-5  # relative: M-norms closer than this count as equal
_ELLIPSOID_METHODS = ("k", "inverse", "norm", "norm_tf", "project_tf", "to_surface", "sample_inside")


@runtime_checkable
class LatentObjective(Protocol):
    """What the latent attacks attack (``advface.semantic.pipeline.SemanticObjective`` for real faces).

    Attributes:
        num_classes: classes of the logits: gallery identities (identification) or 2 (verification).
        dimension: ``k``, the number of attribute directions (the ellipsoid's ``k``).
    """

    num_classes: int
    dimension: int

    def logits(self, delta: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """``(B, k)`` float32 coefficients and ``(B,)`` int32 identity rows -> ``(B, C)`` float32 logits.

        Differentiable with respect to ``delta`` and traceable inside ``tf.function``; row ``i`` of the
        output depends on row ``i`` of the inputs only. For identification the source's logits are
        ``-distance / sqrt(embedding size)`` to each gallery identity.
        """
        ...

    def labels(self, rows) -> np.ndarray:
        """``(B,)`` the true class of each row."""
        ...


@dataclass(frozen=True)
class LatentAttackResult:
    """What a latent attack returns, one entry per attacked row.

    Attributes:
        attack: ``"LatentPGD"`` or ``"LatentFAB"``.
        rows: ``(N,)`` the identity rows attacked, in the order given.
        deltas: ``(N, k)`` float32 coefficients: per row the smallest (M-norm) successful perturbation the
            attack found, zero where it found none (and for rows misclassified without a perturbation).
        success: ``(N,)`` bool, ``argmax(logits) != label`` from a fresh forward pass of ``deltas``.
        magnitudes: ``(N,)`` ``||delta||_M`` (the source's ``sqrt(magnitude)``); at most 1 for PGD.
        predicted: ``(N,)`` class the objective gives ``deltas``.
        labels: ``(N,)`` true classes.
        clean_predicted: ``(N,)`` class the objective gives ``delta = 0``.
        steps: steps per restart (and per target, FAB).
        restarts: restarts per row (and per target, FAB).
        seed: the seed used.
        seconds: wall time of the call.
    """

    attack: str
    rows: np.ndarray
    deltas: np.ndarray = field(repr=False)
    success: np.ndarray
    magnitudes: np.ndarray
    predicted: np.ndarray
    labels: np.ndarray
    clean_predicted: np.ndarray
    steps: int
    restarts: int
    seed: int
    seconds: float

    @property
    def success_rate(self) -> float:
        """Share of rows on which the attack succeeded (fresh forward pass)."""
        return float(np.mean(self.success)) if len(self.success) else 0.0

    @property
    def mean_magnitude(self) -> float:
        """Mean ``||delta||_M`` over the successful rows (the source's ``avg_mag``); NaN without any."""
        return float(np.mean(self.magnitudes[self.success])) if self.success.any() else float("nan")


def latent_loss(loss: str, logits, labels):
    """The per-row loss ``(B,)`` the latent PGD minimises (TensorFlow), the source's ``compute_loss``.

    Args:
        loss: ``"xent"``: minus the cross-entropy of the logits w.r.t. the label (cross-entropy
            maximised); ``"away"``: the softmax probability of the label; ``"nearest"``: minus the largest
            softmax probability of another class; ``"diff"``: the label's probability minus the largest
            other; ``"dlr"``: the difference-of-logits ratio ``(z_y - max_{j != y} z_j) / (z_1 - z_3)``
            with ``z_1 >= z_2 >= z_3`` the top three logits (Croce and Hein 2020; needs 3 classes).
        logits: ``(B, C)`` float32; for identification ``-distance / sqrt(embedding size)``.
        labels: ``(B,)`` int32 true classes.

    The attack sums these over rows, so each row's gradient is its own; the source averaged over its
    batch of 4, so with the same learning rate its steps were 4 times shorter.
    """
    own = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)
    if loss == "xent":
        return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if loss == "dlr":
        z_own = tf.gather(logits, labels, axis=1, batch_dims=1)
        z_other = tf.reduce_max(tf.where(own, tf.constant(-np.inf, logits.dtype), logits), axis=1)
        top = tf.math.top_k(logits, k=3).values
        return (z_own - z_other) / (top[:, 0] - top[:, 2] + 1e-12)
    if loss not in ("away", "nearest", "diff"):
        raise AdvfaceError(f"Unknown loss. Received: loss={loss!r}. Known: {', '.join(LOSSES)}.")
    p = tf.nn.softmax(logits, axis=1)
    p_own = tf.gather(p, labels, axis=1, batch_dims=1)
    p_other = tf.reduce_max(tf.where(own, -1.0, p), axis=1)
    return {"away": p_own, "nearest": -p_other, "diff": p_own - p_other}[loss]


class _Steps:
    """Counts steps and reports each to the progress callback."""

    def __init__(self, progress: ProgressCallback | None, total: int, stage: str):
        self.progress, self.total, self.stage, self.count = progress, total, stage, 0

    def step(self, **metrics) -> None:
        self.count += 1
        report(self.progress, self.count, self.total, self.stage, **metrics)


class _LatentAttack:
    """What both latent attacks share: checks, the clean pass, batching, the fresh pass, the result."""

    name: ClassVar[str] = ""
    # Compiled functions by (attack class, objective, ellipsoid): shared by instances that differ only in
    # settings passed as tensors (steps, restarts, learning rate ...), the least recently used dropped.
    _shared: ClassVar[OrderedDict] = OrderedDict()
    _shared_size: ClassVar[int] = 16

    def __init__(self, *, ellipsoid, steps: int, restarts: int, batch_size: int):
        missing = [m for m in _ELLIPSOID_METHODS if not hasattr(ellipsoid, m)]
        if missing:
            raise AdvfaceError(
                f"`ellipsoid` must be an advface.semantic.budget.Ellipsoid. Received: ellipsoid of type "
                f"{type(ellipsoid).__name__} (it lacks {', '.join(missing)}). Build one with "
                "Ellipsoid.from_budgets(budgets)."
            )
        check_positive(steps=steps, restarts=restarts, batch_size=batch_size)
        self.ellipsoid = ellipsoid
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.batch_size = int(batch_size)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({items})"

    # --- what subclasses implement -------------------------------------------------------------------

    def _build(self, objective) -> dict:
        """The compiled functions for ``objective`` (each a ``tf.function``); ``"logits"`` is added."""
        raise NotImplementedError

    def _static(self) -> tuple:
        """The settings baked into the compiled functions (the others are passed as tensors)."""
        return ()

    def _planned_steps(self, num_classes: int) -> int:
        """Progress steps per batch."""
        raise NotImplementedError

    def _attack_batch(self, functions, rows, labels, clean_logits, seed, steps) -> np.ndarray:
        """Attack one batch of rows (all clean-correct); the ``(B, k)`` smallest successful deltas found,
        zeros where none."""
        raise NotImplementedError

    def _check(self, objective) -> None:
        """Attack-specific checks of the objective."""

    # --- the call ------------------------------------------------------------------------------------

    def __call__(
        self,
        objective: LatentObjective,
        rows,
        *,
        seed: int | None = 0,
        progress: ProgressCallback | None = None,
    ) -> LatentAttackResult:
        """Attack ``rows`` of ``objective``.

        Args:
            objective: a :class:`LatentObjective` with ``dimension == ellipsoid.k``.
            rows: ``(N,)`` identity rows (non-negative integers) the objective knows.
            seed: makes the random starts reproducible; drawn (and recorded) when ``None``.
            progress: called once per step with a :class:`~advface.progress.Progress`; raise
                :class:`~advface.progress.Cancelled` in it to stop.

        Returns:
            A :class:`LatentAttackResult`.
        """
        start = time.perf_counter()
        rows = _check_rows(rows)
        labels = _check_objective(objective, self.ellipsoid.k, rows)
        self._check(objective)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise AdvfaceError(f"`seed` must be a non-negative integer or None. Received: seed={seed!r}.")
        seed = int(seed)
        functions = self._functions(objective)
        k = self.ellipsoid.k

        # 1. The clean decision; rows already misclassified keep delta = 0.
        clean_logits = self._logits(functions, np.zeros((len(rows), k), np.float32), rows)
        if clean_logits.shape != (len(rows), objective.num_classes):
            raise AdvfaceError(
                f"objective.logits must return (B, num_classes) = ({len(rows)}, {objective.num_classes}). "
                f"Received: shape={clean_logits.shape}."
            )
        clean_predicted = clean_logits.argmax(axis=1)
        pending = np.flatnonzero(clean_predicted == labels)

        # 2. Batch by batch.
        starts = range(0, len(pending), self.batch_size)
        steps = _Steps(progress, self._planned_steps(objective.num_classes) * len(starts), self.stage)
        deltas = np.zeros((len(rows), k), np.float32)
        for first in starts:
            index = pending[first : first + self.batch_size]
            deltas[index] = self._attack_batch(
                functions, rows[index], labels[index], clean_logits[index], seed, steps
            )

        # 3. A fresh forward pass of what is returned.
        predicted = self._logits(functions, deltas, rows).argmax(axis=1)
        return LatentAttackResult(
            attack=self.name,
            rows=rows,
            deltas=deltas,
            success=predicted != labels,
            magnitudes=self.ellipsoid.norm(deltas),
            predicted=predicted,
            labels=labels,
            clean_predicted=clean_predicted,
            steps=self.steps,
            restarts=self.restarts,
            seed=seed,
            seconds=time.perf_counter() - start,
        )

    @property
    def stage(self) -> str:
        return self.name.lower().replace("latent", "latent-")

    def _functions(self, objective) -> dict:
        """The compiled functions for ``objective``, built once and shared (see ``_shared``)."""
        key = (type(self), id(objective), _ellipsoid_key(self.ellipsoid), self._static())
        shared = _LatentAttack._shared
        if key not in shared:
            k = self.ellipsoid.k

            @tf.function(input_signature=[_spec([None, k]), _spec([None], tf.int32)])
            def logits(delta, rows):
                return objective.logits(delta, rows)

            # The objective is kept with its functions so that its id cannot be reused by another one.
            shared[key] = (objective, {**self._build(objective), "logits": logits})
            while len(shared) > self._shared_size:
                shared.popitem(last=False)
        shared.move_to_end(key)
        return shared[key][1]

    def _logits(self, functions, deltas: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``(N, C)`` logits of ``deltas`` in batches."""
        out = [
            functions["logits"](
                tf.constant(deltas[i : i + self.batch_size], tf.float32),
                tf.constant(rows[i : i + self.batch_size], tf.int32),
            ).numpy()
            for i in range(0, len(rows), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32)


def _spec(shape, dtype=tf.float32) -> tf.TensorSpec:
    return tf.TensorSpec(shape, dtype)


def _ellipsoid_key(ellipsoid):
    """Ellipsoids are equal by value (``Ellipsoid`` hashes its matrix); others by identity."""
    try:
        hash(ellipsoid)
    except TypeError:
        return id(ellipsoid)
    return ellipsoid


_PROJECTIONS: OrderedDict = OrderedDict()


def _projection(ellipsoid):
    """``ellipsoid.project_tf`` as one ``tf.function`` per ellipsoid (the 16 last used): the attacks' steps
    call it, so its Newton iteration is traced once rather than inside every step function."""
    key = _ellipsoid_key(ellipsoid)
    if key not in _PROJECTIONS:
        _PROJECTIONS[key] = tf.function(ellipsoid.project_tf, input_signature=[_spec([None, ellipsoid.k])])
        while len(_PROJECTIONS) > 16:
            _PROJECTIONS.popitem(last=False)
    _PROJECTIONS.move_to_end(key)
    return _PROJECTIONS[key]


def _check_rows(rows) -> np.ndarray:
    a = np.asarray(rows)
    if a.ndim == 0:
        a = a[None]
    if a.ndim != 1 or not len(a) or not np.issubdtype(a.dtype, np.integer) or a.min() < 0:
        raise AdvfaceError(
            f"`rows` must be a non-empty 1-D sequence of non-negative integer identity rows. Received: "
            f"shape={a.shape}, dtype={a.dtype}."
        )
    return a.astype(np.int64)


def _check_objective(objective, k: int, rows: np.ndarray) -> np.ndarray:
    """Check ``objective`` against the protocol and ``k``; return its ``(N,)`` labels for ``rows``."""
    if not isinstance(objective, LatentObjective):
        raise AdvfaceError(
            "The latent attacks take a LatentObjective (num_classes, dimension, logits(delta, rows), "
            f"labels(rows)), e.g. advface.semantic.pipeline.SemanticObjective. Received: "
            f"{type(objective).__name__}."
        )
    if int(objective.dimension) != k:
        raise AdvfaceError(
            f"The objective's directions and the ellipsoid must agree on k. Received: objective.dimension="
            f"{objective.dimension}, ellipsoid.k={k}. Build the ellipsoid for the same attributes."
        )
    if int(objective.num_classes) < 2:
        raise AdvfaceError(
            f"An objective needs 2 classes or more. Received: num_classes={objective.num_classes}."
        )
    labels = np.asarray(objective.labels(rows)).reshape(-1)
    if labels.shape != rows.shape or not np.issubdtype(labels.dtype, np.integer):
        raise AdvfaceError(
            f"objective.labels(rows) must give one integer class per row. Received: shape={labels.shape}, "
            f"dtype={labels.dtype} for {len(rows)} rows."
        )
    if labels.min() < 0 or labels.max() >= objective.num_classes:
        raise AdvfaceError(
            f"Labels must be classes 0..{objective.num_classes - 1}. Received: labels from {labels.min()} "
            f"to {labels.max()}."
        )
    return labels.astype(np.int64)


def _row_seed(seed: int, row: int) -> int:
    """The seed of one row's random starts: a function of ``(seed, row)`` only."""
    return int(np.random.SeedSequence([seed, int(row)]).generate_state(1, np.uint64)[0])


def _keep_smallest(best_delta, best_norm, candidate, success, norms) -> None:
    """In place, per row: keep ``candidate`` where it succeeds with a smaller M-norm than the best.

    Smaller means by more than float32 rounding (relative ``_TIE``), so that among equal norms (PGD's
    iterates on the ellipsoid's surface all have norm 1) the first is kept, and rounding, which may
    differ with the batch's size, does not pick one.
    """
    better = success & (norms < best_norm * (1 - _TIE))
    best_delta[better] = candidate[better]
    best_norm[better] = norms[better]


class LatentPGD(_LatentAttack):
    """Projected gradient descent on a latent loss inside the ellipsoid (the source's ``manual`` attack).

    Per batch of rows and per restart (the steps of the source's ``find_adversaries_pgd``, fixed):

    1. start at ``delta_0`` uniform in the ellipsoid, pushed radially onto its surface when
       ``on_surface`` (the source's default);
    2. each step evaluates the objective at the current ``delta`` (success is read from the same
       forward pass), takes an optimizer step on the loss and projects back onto the ellipsoid
       (the exact Euclidean projection, ``Ellipsoid.project_tf``);
    3. after the last step the last iterate is evaluated too.

    Per row the successful iterate with the smallest ``||delta||_M`` over all steps and restarts is
    returned. By default every row searches for all steps and restarts even after a success (a later
    iterate or restart may succeed closer to 0). With ``early_stop`` a row stops at its first success,
    which is then what it returns (the source's behaviour, per row rather than per batch so that results
    do not depend on the batching), and a batch ends when all its rows have stopped: progress is then
    reported fewer times than planned.

    Optimizers, with PyTorch's update rules as in the source and state reset at each restart:
    ``"sgd"`` (``v = momentum v + g``, ``delta -= learning_rate v``), ``"adam"`` (betas 0.9, 0.999,
    eps 1e-8; ``momentum`` is not used) and ``"rmsprop"`` (alpha 0.99, eps 1e-8, no momentum). The loss
    is summed over rows (the source averaged over its batch of 4), so each row's step is independent of
    the batch: with the source's learning rate of 100 and SGD the steps are 4 times the source's.

    Args:
        ellipsoid: the region, an :class:`~advface.semantic.budget.Ellipsoid`.
        steps: optimizer steps per restart (the source's ``iters``).
        restarts: random starts per row.
        optimizer: ``"sgd"``, ``"adam"`` or ``"rmsprop"``.
        learning_rate: the optimizer's step size (the source's 100 suits the tiny gradients of logits
            ``-distance / sqrt(512)``).
        momentum: SGD momentum.
        loss: one of :data:`LOSSES` (see :func:`latent_loss`).
        on_surface: start on the ellipsoid's surface rather than inside it.
        early_stop: stop each row at its first success (see above).
        batch_size: rows attacked together.

    Example:
        >>> attack = LatentPGD(ellipsoid=Ellipsoid.from_budgets(budgets), steps=5, restarts=5)
        >>> result = attack(objective, np.arange(200), seed=0)
        >>> result.success_rate, result.mean_magnitude
    """

    name = "LatentPGD"

    def __init__(
        self,
        *,
        ellipsoid,
        steps: int = 10,
        restarts: int = 10,
        optimizer: str = "sgd",
        learning_rate: float = 100.0,
        momentum: float = 0.9,
        loss: str = "xent",
        on_surface: bool = True,
        early_stop: bool = False,
        batch_size: int = 20,
    ):
        super().__init__(ellipsoid=ellipsoid, steps=steps, restarts=restarts, batch_size=batch_size)
        name = str(optimizer).lower()
        if name not in OPTIMIZERS:
            raise AdvfaceError(
                f"Unknown optimizer. Received: optimizer={optimizer!r}. Known: {', '.join(OPTIMIZERS)}."
            )
        if loss not in LOSSES:
            raise AdvfaceError(f"Unknown loss. Received: loss={loss!r}. Known: {', '.join(LOSSES)}.")
        check_range("learning_rate", learning_rate, 1e-12, np.inf)
        check_range("momentum", momentum, 0.0, 0.999999)
        self.optimizer = name
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.loss = loss
        self.on_surface = bool(on_surface)
        self.early_stop = bool(early_stop)

    def _check(self, objective) -> None:
        if self.loss == "dlr" and objective.num_classes < 3:
            raise AdvfaceError(
                "The dlr loss compares the top three logits and needs 3 classes or more. Received: "
                f"num_classes={objective.num_classes}. Use loss='xent'."
            )

    def _planned_steps(self, num_classes: int) -> int:
        return self.steps * self.restarts

    def _static(self) -> tuple:
        return (self.loss, self.optimizer)

    def _build(self, objective) -> dict:
        loss, optimizer, k = self.loss, self.optimizer, self.ellipsoid.k
        project = _projection(self.ellipsoid)
        matrix, vector, scalar = _spec([None, k]), _spec([None], tf.int32), _spec([])
        signature = [matrix, matrix, matrix, scalar, vector, vector, _spec([None], tf.bool), scalar, scalar]

        @tf.function(input_signature=signature)
        def step(delta, first, second, count, rows, labels, active, learning_rate, momentum):
            # 1. Loss, gradient and success at the current iterate.
            with tf.GradientTape() as tape:
                tape.watch(delta)
                logits = objective.logits(delta, rows)
                value = latent_loss(loss, logits, labels)
                total = tf.reduce_sum(value)
            grad = tape.gradient(total, delta)
            success = tf.argmax(logits, axis=1, output_type=tf.int32) != labels
            # 2. The optimizer's update (PyTorch's rules).
            if optimizer == "sgd":
                first = momentum * first + grad
                update = learning_rate * first
            elif optimizer == "adam":
                first = 0.9 * first + 0.1 * grad
                second = 0.999 * second + 0.001 * grad**2
                corrected = first / (1.0 - 0.9**count)
                update = learning_rate * corrected / (tf.sqrt(second / (1.0 - 0.999**count)) + 1e-8)
            else:
                second = 0.99 * second + 0.01 * grad**2
                update = learning_rate * grad / (tf.sqrt(second) + 1e-8)
            # 3. Back into the ellipsoid; rows that stopped stay where they are.
            moved = project(delta - update)
            return tf.where(active[:, None], moved, delta), first, second, value, success

        return {"step": step}

    def _starts(self, seed: int, row: int) -> np.ndarray:
        """``(restarts, k)`` random starts of one row."""
        start = self.ellipsoid.sample_inside(self.restarts, seed=_row_seed(seed, row))
        return self.ellipsoid.to_surface(start) if self.on_surface else start

    def _attack_batch(self, functions, rows, labels, clean_logits, seed, steps) -> np.ndarray:
        step = functions["step"]
        b, k = len(rows), self.ellipsoid.k
        starts = np.stack([self._starts(seed, row) for row in rows], axis=1).astype(np.float32)
        rows_t, labels_t = tf.constant(rows, tf.int32), tf.constant(labels, tf.int32)
        rates = tf.constant(self.learning_rate, tf.float32), tf.constant(self.momentum, tf.float32)
        best_delta = np.zeros((b, k), np.float32)
        best_norm = np.full(b, np.inf)
        found = np.zeros(b, bool)  # rows with a success so far

        def keep(delta: np.ndarray, success: np.ndarray) -> None:
            # With early_stop only a row's first success counts.
            allowed = ~found if self.early_stop else np.ones(b, bool)
            _keep_smallest(best_delta, best_norm, delta, success & allowed, self.ellipsoid.norm(delta))
            found[:] |= success

        for restart in range(self.restarts):
            # 1. The start.
            delta = tf.constant(starts[restart])
            first = second = tf.zeros_like(delta)
            for i in range(self.steps):
                # 2. One step; the iterate it started from is judged by the same forward pass.
                active = tf.constant(~found if self.early_stop else np.ones(b, bool))
                moved, first, second, value, success = step(
                    delta, first, second, tf.constant(i + 1, tf.float32), rows_t, labels_t, active, *rates
                )
                keep(delta.numpy(), success.numpy())
                steps.step(loss=float(np.mean(value.numpy())), success_rate=float(found.mean()))
                delta = moved
                if self.early_stop and found.all():
                    return best_delta
            # 3. The last iterate counts too.
            logits = functions["logits"](delta, rows_t).numpy()
            keep(delta.numpy(), logits.argmax(axis=1) != labels)
            if self.early_stop and found.all():
                break
        return best_delta


class LatentFAB(_LatentAttack):
    """FAB-t, the targeted fast adaptive boundary attack, minimising ``||delta||_M`` (not bounded by it).

    Croce and Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
    ICML 2020, in the targeted form of AutoAttack, with the projection derived for the M-norm. For each
    row the targets are the ``targets`` classes with the largest clean logits other than the label (the
    nearest other identities). For each target ``t`` and restart, from the start ``x`` (the clean point
    ``x0 = 0``):

    1. linearise ``f = z_t - z_y`` (``f >= 0``: the target wins) at ``x``: ``f + g^T (u - x) = 0``;
    2. the smallest M-norm steps onto that boundary, from ``x`` and from ``x0``:
       ``d = -M^-1 g f / (g^T M^-1 g)``, ``d0 = -M^-1 g (f + g^T (x0 - x)) / (g^T M^-1 g)``
       (minimising ``u^T M u`` subject to ``g^T u = c`` gives ``u = c M^-1 g / (g^T M^-1 g)``);
    3. the biased step ``x <- (1 - alpha)(x + eta d) + alpha (x0 + eta d0)`` with
       ``alpha = min(||d||_M / (||d||_M + ||d0||_M), alpha_max)`` (FAB's ``alpha``, norms in M);
    4. if ``x`` is now misclassified (any class but the label) it is kept when its M-norm is the
       smallest so far, and pulled back towards the clean point: ``x <- x0 + beta (x - x0)``.

    Restarts: the first starts at the clean point, as in the paper and AutoAttack (the source forced
    random starts everywhere), but a hair off it: ``START_OFFSET`` (1e-3) in M-norm in a random direction.
    At the clean point itself the distance to the face's own clean embedding is at its minimum, 0, with
    no gradient, and in verification that distance is the only thing that moves: FAB would not move at
    all. The other restarts start on the M-sphere of radius ``0.5 * min(best ||delta||_M so far, 1)``,
    FAB's ``min(best, eps) / 2`` with the ellipsoid's surface as ``eps``. Directions are drawn from
    ``(seed, row)``. The answer per row is the smallest successful ``delta`` over all targets, restarts
    and steps; the result's ``success`` re-checks it with a fresh forward pass. There is no box on the
    coefficients (the source ran FAB unconstrained too).

    Non-finite gradients are set to 0.

    Args:
        ellipsoid: defines ``M`` (the region itself does not bound FAB).
        steps: FAB iterations per target and restart.
        restarts: starts per target (the first a hair off the clean point).
        targets: target classes per row (at most ``num_classes - 1``).
        eta: overshoot of each step past the linearised boundary.
        beta: pull-back factor towards the clean point after a success.
        alpha_max: the largest weight of the step from the clean point.
        batch_size: rows attacked together.

    Example:
        >>> attack = LatentFAB(ellipsoid=Ellipsoid.from_budgets(budgets), steps=5, restarts=2, targets=2)
        >>> result = attack(objective, np.arange(200), seed=0)
        >>> result.mean_magnitude
    """

    name = "LatentFAB"

    def __init__(
        self,
        *,
        ellipsoid,
        steps: int = 10,
        restarts: int = 10,
        targets: int = 10,
        eta: float = 1.05,
        beta: float = 0.9,
        alpha_max: float = 0.1,
        batch_size: int = 20,
    ):
        super().__init__(ellipsoid=ellipsoid, steps=steps, restarts=restarts, batch_size=batch_size)
        if not hasattr(ellipsoid, "sample_surface"):
            raise AdvfaceError(
                "`ellipsoid` must be an advface.semantic.budget.Ellipsoid. Received: ellipsoid of type "
                f"{type(ellipsoid).__name__} (it lacks sample_surface)."
            )
        check_positive(targets=targets)
        check_range("eta", eta, 1.0, 10.0)
        check_range("beta", beta, 1e-6, 1.0)
        check_range("alpha_max", alpha_max, 0.0, 1.0)
        self.targets = int(targets)
        self.eta = float(eta)
        self.beta = float(beta)
        self.alpha_max = float(alpha_max)

    def _planned_steps(self, num_classes: int) -> int:
        return self.steps * self.restarts * min(self.targets, num_classes - 1)

    def _preconditioner(self) -> np.ndarray:
        """The matrix that turns a gradient into the steepest direction: ``M^-1`` for the M-norm."""
        return np.asarray(self.ellipsoid.inverse, np.float64)

    def _build(self, objective) -> dict:
        ellipsoid, k = self.ellipsoid, self.ellipsoid.k
        precondition = tf.constant(self._preconditioner(), tf.float32)
        vector, scalar = _spec([None], tf.int32), _spec([])

        @tf.function(input_signature=[_spec([None, k]), vector, vector, vector, scalar, scalar, scalar])
        def step(x, rows, labels, target, eta, beta, alpha_max):
            # 1. f = z_t - z_y and its gradient g at x.
            with tf.GradientTape() as tape:
                tape.watch(x)
                z = objective.logits(x, rows)
                f = tf.gather(z, target, axis=1, batch_dims=1) - tf.gather(z, labels, axis=1, batch_dims=1)
                total = tf.reduce_sum(f)
            g = tape.gradient(total, x)
            g = tf.where(tf.math.is_finite(g), g, 0.0)
            # 2. The smallest M-norm steps onto the linearised boundary, from x and from x0 = 0.
            direction = tf.matmul(g, precondition, transpose_b=True)  # M^-1 g per row
            q = tf.maximum(tf.reduce_sum(g * direction, axis=1), 1e-12)
            d = -(f / q)[:, None] * direction
            d0 = -((f - tf.reduce_sum(g * x, axis=1)) / q)[:, None] * direction
            # 3. FAB's biased step, alpha from the M-norms of the two steps.
            a = tf.maximum(ellipsoid.norm_tf(d), 1e-8)
            a0 = tf.maximum(ellipsoid.norm_tf(d0), 1e-8)
            alpha = tf.clip_by_value(a / (a + a0), 0.0, alpha_max)[:, None]
            x = (1.0 - alpha) * (x + eta * d) + alpha * (eta * d0)
            # 4. Misclassified now? Then (after the caller keeps it) pull it back towards x0.
            adversarial = tf.argmax(objective.logits(x, rows), axis=1, output_type=tf.int32) != labels
            return tf.where(adversarial[:, None], beta * x, x), x, adversarial

        return {"step": step}

    def _attack_batch(self, functions, rows, labels, clean_logits, seed, steps) -> np.ndarray:
        step = functions["step"]
        b, k = len(rows), self.ellipsoid.k
        count = min(self.targets, clean_logits.shape[1] - 1)
        # The nearest other classes on the clean point, nearest first.
        others = np.where(np.eye(clean_logits.shape[1], dtype=bool)[labels], -np.inf, clean_logits)
        targets = np.argsort(-others, axis=1, kind="stable")[:, :count].astype(np.int32)
        directions = np.stack(
            [self.ellipsoid.sample_surface(count * self.restarts, seed=_row_seed(seed, row)) for row in rows],
            axis=1,
        )  # (restarts * targets, B, k), ||.||_M = 1, restart-major: more restarts keep the first ones
        rows_t, labels_t = tf.constant(rows, tf.int32), tf.constant(labels, tf.int32)
        settings = [tf.constant(v, tf.float32) for v in (self.eta, self.beta, self.alpha_max)]
        best_delta = np.zeros((b, k), np.float32)
        best_norm = np.full(b, np.inf)
        for j in range(count):
            target = tf.constant(targets[:, j])
            for restart in range(self.restarts):
                # 1. A hair off the clean point, then random points at half the best norm so far.
                radius = START_OFFSET if restart == 0 else 0.5 * np.minimum(best_norm, 1.0)
                x = directions[restart * count + j] * np.reshape(radius, (-1, 1))
                x = tf.constant(x.astype(np.float32))
                # 2. FAB steps; every misclassified iterate competes for the smallest.
                for _ in range(self.steps):
                    x, candidate, adversarial = step(x, rows_t, labels_t, target, *settings)
                    candidate = candidate.numpy()
                    _keep_smallest(
                        best_delta, best_norm, candidate, adversarial.numpy(), self.ellipsoid.norm(candidate)
                    )
                    found = np.isfinite(best_norm)
                    steps.step(
                        success_rate=float(found.mean()),
                        magnitude=float(best_norm[found].mean()) if found.any() else float("nan"),
                    )
        return best_delta
