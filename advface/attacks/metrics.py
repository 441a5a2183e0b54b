"""How well attacks work, and whether the numbers can be trusted.

Everything here reads :class:`~advface.attacks.base.AttackResult` objects (or plain arrays) and returns
numbers or frozen dataclasses; the functions that run attacks take a *factory* ``make_attack(epsilon)``
rather than an attack, because hyperparameters derived from the budget (PGD's default ``step_size =
2.5 epsilon / steps``) must follow it:

=============================================  =========================================================
what                                           functions
=============================================  =========================================================
success at one budget                          :func:`success_rate`, :func:`summary`
success against the budget                     :func:`success_curve` -> :class:`Curve`,
                                               :func:`minimal_epsilon`
smallest budget per image                      :func:`minimal_perturbation` -> :class:`MinimalPerturbation`
verification (1:1)                             :func:`tar_at_far`, :func:`verification_under_attack`
identification (1:N)                           :func:`accuracy_at_k`, :func:`precision_recall`
transfer between models                        :func:`transfer_matrix` -> :class:`TransferMatrix`
sanity checks (in the spirit of AutoAttack)    :func:`sanity_flags` -> list of :class:`SanityFlag`
=============================================  =========================================================

The sanity checks follow Carlini et al., "On evaluating adversarial robustness" (2019) and Croce & Hein,
"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks"
(AutoAttack, ICML 2020): an evaluation is suspect when gradients vanish, when success does not grow with
the budget, when a black-box attack beats a white-box one, when success depends on sub-8-bit pixel values,
or when the goal was met before any attack.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from advface.attacks.base import (
    LOSSES,
    AttackResult,
    Goal,
    check_goal,
    default_loss,
    goal_name,
    goal_objective,
    goal_tensors,
    judge,
)
from advface.attacks.pixel import check_positive, in_box, prepare_mask, random_start
from advface.errors import AdvfaceError
from advface.images import check_images
from advface.progress import ProgressCallback, report
from advface.verification import Identification, calibrate_threshold

MakeAttack = Callable[[float], Callable]
"""``make_attack(epsilon) -> attack``: e.g. ``lambda epsilon: PGD(epsilon=epsilon, steps=40)``."""


# --- Success at one budget ------------------------------------------------------------------------------


def success_rate(
    result, *, exclude_clean: bool = False, clean_success=None, eight_bit: bool = False
) -> float:
    """Share of images on which an attack met its goal.

    Args:
        result: an :class:`~advface.attacks.base.AttackResult`, or ``(N,)`` booleans (success per image).
        exclude_clean: count only images that did not already meet the goal clean (the attack's own
            contribution). Needs ``clean_success`` when ``result`` is an array.
        clean_success: ``(N,)`` booleans, whether each clean image already met the goal (arrays only;
            a result carries its own).
        eight_bit: judge the images rounded to 8 bits (``result.success_8bit``; results only).

    Returns:
        A rate in ``[0, 1]``; ``nan`` when no image is counted (none given, or all excluded).
    """
    if isinstance(result, AttackResult):
        success = result.success_8bit if eight_bit else result.success
        clean = result.clean_success
    else:
        if eight_bit:
            raise AdvfaceError(
                "`eight_bit=True` needs an AttackResult (it carries success_8bit). Received: an array; "
                "pass the 8-bit successes as the array instead."
            )
        success = _bools(result, "result")
        clean = None if clean_success is None else _bools(clean_success, "clean_success", len(success))
    if exclude_clean:
        if clean is None:
            raise AdvfaceError(
                "`exclude_clean=True` needs to know which images met the goal clean. Received: "
                "clean_success=None. Pass clean_success=result.clean_success, or the AttackResult itself."
            )
        success = success[~clean]
    return float(np.mean(success)) if len(success) else math.nan


def summary(result: AttackResult) -> dict:
    """The headline numbers of one attack run, JSON-ready (plain floats and ints; ``None`` if undefined).

    Keys: ``attack``, ``goal``, ``norm``, ``epsilon``, ``images``, ``seed``, ``success_rate``,
    ``success_rate_8bit``, ``clean_success_rate``, ``success_rate_excluding_clean``, ``median_linf``,
    ``mean_linf``, ``median_l2``, ``mean_l2`` (over the successful images only), ``mean_steps``,
    ``mean_queries``, ``seconds``.
    """
    if not isinstance(result, AttackResult):
        raise AdvfaceError(f"`summary` takes an AttackResult. Received: {type(result).__name__}.")
    ok = np.asarray(result.success, bool)
    out = {
        "attack": result.attack,
        "goal": result.goal,
        "norm": result.norm,
        "epsilon": None if result.epsilon is None else float(result.epsilon),
        "images": len(ok),
        "seed": result.seed,
        "success_rate": success_rate(result),
        "success_rate_8bit": success_rate(result, eight_bit=True),
        "clean_success_rate": success_rate(np.asarray(result.clean_success, bool)),
        "success_rate_excluding_clean": success_rate(result, exclude_clean=True),
    }
    for name in ("linf", "l2"):
        norms = np.asarray(getattr(result, name), np.float64)[ok]
        out[f"median_{name}"] = float(np.median(norms)) if len(norms) else math.nan
        out[f"mean_{name}"] = float(np.mean(norms)) if len(norms) else math.nan
    out["mean_steps"] = float(np.mean(result.steps)) if len(ok) else math.nan
    out["mean_queries"] = float(np.mean(result.queries)) if len(ok) else math.nan
    out["seconds"] = float(result.seconds)
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}


# --- Success against the budget -------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """Success of one attack at several budgets (:func:`success_curve`).

    Attributes:
        epsilons: ``(E,)`` increasing budgets.
        success: ``(E, N)`` bool, image ``n`` attacked successfully at ``epsilons[e]`` (fresh forward pass).
        success_8bit: ``(E, N)`` bool, the same after rounding the adversarial images to 8 bits.
        clean_success: ``(N,)`` bool, the goal was met before the attack.
        scores: ``(E, N)`` the goal's score after the attack (:attr:`~advface.attacks.base.Judgement.score`).
        norms: ``(E, N)`` perturbation norms in ``norm``.
        attack, goal, norm: the attack's name, the goal's name, the budget's norm.
        seed: the seed every budget was attacked with.
        seconds: wall time of the sweep.
    """

    epsilons: np.ndarray
    success: np.ndarray
    success_8bit: np.ndarray
    clean_success: np.ndarray
    scores: np.ndarray = field(repr=False)
    norms: np.ndarray = field(repr=False)
    attack: str = ""
    goal: str = ""
    norm: str = "linf"
    seed: int | None = None
    seconds: float = 0.0

    def success_rates(self, *, exclude_clean: bool = False, eight_bit: bool = False) -> np.ndarray:
        """``(E,)`` success rate per budget (``nan`` where no image is counted)."""
        success = self.success_8bit if eight_bit else self.success
        if exclude_clean:
            success = success[:, ~self.clean_success]
        return success.mean(axis=1) if success.shape[1] else np.full(len(self.epsilons), np.nan)

    @property
    def minimal_epsilons(self) -> np.ndarray:
        """``(N,)`` per image the smallest budget that succeeded (:func:`minimal_epsilon`)."""
        return minimal_epsilon(self.success, self.epsilons)

    def format(self) -> str:
        """A text table: budget, success rate, 8-bit success rate."""
        rates, rates_8bit = self.success_rates(), self.success_rates(eight_bit=True)
        lines = [f"{self.attack} {self.goal} ({self.norm}), {self.success.shape[1]} images", ""]
        lines.append(f"{'epsilon':>16}  {'success':>8}  {'8-bit':>8}")
        for eps, rate, rate8 in zip(self.epsilons, rates, rates_8bit, strict=True):
            lines.append(f"{_epsilon_text(eps, self.norm):>16}  {_percent(rate):>8}  {_percent(rate8):>8}")
        return "\n".join(lines)


def success_curve(
    make_attack: MakeAttack,
    model,
    images,
    goal: Goal,
    epsilons: Sequence[float],
    *,
    mask=None,
    progress: ProgressCallback | None = None,
    seed: int | None = None,
) -> Curve:
    """Run an attack at each budget and record which images it fooled.

    Every budget is attacked with the same ``seed`` (common random numbers: the random starts differ
    only in scale), so differences between budgets are the budget's, not the dice's.

    Args:
        make_attack: ``epsilon -> attack``, e.g. ``lambda epsilon: PGD(epsilon=epsilon, steps=40)``.
        model: a zoo ``FaceModel``.
        images: ``(N, S, S, 3)`` float32 chips in ``[0, 1]`` for the model's template.
        goal: the goal (``Dodge``, ``Impersonate``, ...).
        epsilons: ``(E,)`` strictly increasing budgets > 0, in the attack's norm.
        mask: optional region the attack may change (``advface.attacks.pixel.prepare_mask``).
        progress: called once per budget (stage ``"sweep"``, metrics ``epsilon`` and ``success_rate``);
            a :class:`~advface.progress.Cancelled` raised in it stops the sweep after that budget.
        seed: drawn (and recorded) when ``None``.

    Returns:
        A :class:`Curve`.
    """
    start = time.perf_counter()
    epsilons = _epsilons(epsilons)
    seed = _seed(seed)
    results = []
    for e, epsilon in enumerate(epsilons):
        # 1. A fresh attack at this budget, on every image.
        result = _make(make_attack, epsilon)(model, images, goal, mask=mask, seed=seed)
        results.append(result)
        # 2. One progress step per budget.
        report(
            progress, e + 1, len(epsilons), "sweep", epsilon=float(epsilon), success_rate=success_rate(result)
        )
    first = results[0]
    return Curve(
        epsilons=epsilons,
        success=np.stack([r.success for r in results]).astype(bool),
        success_8bit=np.stack([r.success_8bit for r in results]).astype(bool),
        clean_success=np.asarray(first.clean_success, bool),
        scores=np.stack([r.scores for r in results]),
        norms=np.stack([r.norms for r in results]),
        attack=first.attack,
        goal=first.goal,
        norm=first.norm,
        seed=seed,
        seconds=time.perf_counter() - start,
    )


def minimal_epsilon(success, epsilons) -> np.ndarray:
    """Per image, the smallest budget at which it was attacked successfully.

    Args:
        success: ``(E, N)`` booleans, image ``n`` fooled at ``epsilons[e]``.
        epsilons: ``(E,)`` strictly increasing budgets.

    Returns:
        ``(N,)`` float64: the smallest such epsilon, ``inf`` where no budget succeeded.
    """
    epsilons = _epsilons(epsilons)
    s = np.asarray(success)
    if s.ndim != 2 or s.shape[0] != len(epsilons):
        raise AdvfaceError(
            f"`success` must be (E, N) booleans with one row per epsilon. Received: success.shape="
            f"{s.shape} for {len(epsilons)} epsilons."
        )
    s = s.astype(bool)
    first = s.argmax(axis=0)
    return np.where(s.any(axis=0), epsilons[first], np.inf)


@dataclass(frozen=True)
class MinimalPerturbation:
    """The smallest budget at which an attack fools each image (:func:`minimal_perturbation`).

    Attributes:
        epsilons: ``(N,)`` the smallest budget found to succeed: 0 where the clean image already met the
            goal, ``inf`` where even ``high`` failed. The attack's true threshold lies in
            ``(lower, epsilons]``.
        lower: ``(N,)`` the largest budget found to fail (``low`` where none was, ``high`` for ``inf``).
        images: ``(N, S, S, 3)`` the adversarial images found at ``epsilons`` (clean images where 0 or
            ``inf``).
        attack, goal, norm: names of the attack and goal, and the budget's norm.
        low, high, steps: the search's bracket and bisection rounds.
        calls: attack runs made.
        seed, seconds: the seed every run used and the wall time.
    """

    epsilons: np.ndarray
    lower: np.ndarray
    images: np.ndarray = field(repr=False)
    attack: str
    goal: str
    norm: str
    low: float
    high: float
    steps: int
    calls: int
    seed: int
    seconds: float

    @property
    def median(self) -> float:
        """The median minimal budget (``inf`` when at most half the images were fooled within ``high``)."""
        return float(np.median(self.epsilons))


def minimal_perturbation(
    make_attack: MakeAttack,
    model,
    images,
    goal: Goal,
    *,
    low: float,
    high: float,
    steps: int = 10,
    mask=None,
    progress: ProgressCallback | None = None,
    seed: int | None = None,
) -> MinimalPerturbation:
    """Search, per image, the smallest budget at which a fixed-budget attack succeeds.

    A bisection on a log scale, all images at once: first every image is attacked at ``high`` (images
    already fooled clean get 0; images still not fooled get ``inf``); then each round attacks every
    remaining image at the geometric midpoint of its own bracket ``[lower, upper]`` and keeps the half
    that contains the switch from failure to success. Attacks take one scalar budget, so a round makes
    one call per distinct midpoint, on the images that share it (all images share the bracket at first;
    round ``r`` makes at most ``min(2**r, N)`` calls). The work is ``steps + 1`` attacks per image; the
    bracket narrows to a ratio ``(high / low) ** (1 / 2**steps)`` (10 steps over ``[0.5/255, 32/255]``:
    within 0.5 %).

    The search assumes that success grows with the budget (an image fooled at ``epsilon`` is fooled at
    every larger one); random restarts or too few steps break that: :func:`sanity_flags` on a
    :func:`success_curve` tells.

    Args:
        make_attack: ``epsilon -> attack``, e.g. ``lambda epsilon: PGD(epsilon=epsilon, steps=50)``.
        model: a zoo ``FaceModel``.
        images: ``(N, S, S, 3)`` float32 chips in ``[0, 1]``.
        goal: the goal.
        low, high: the bracket, ``0 < low < high``; ``low`` is assumed to fail and is never attacked.
        steps: bisection rounds.
        mask: optional region the attack may change.
        progress: called once per round (stage ``"bisect"``); raise ``Cancelled`` in it to stop.
        seed: the seed of every attack run; drawn (and recorded) when ``None``.

    Returns:
        A :class:`MinimalPerturbation`; its :attr:`~MinimalPerturbation.median` is the headline number.
    """
    start = time.perf_counter()
    images = check_images(images, size=(model.input_size, model.input_size))
    n = len(images)
    if n == 0:
        raise AdvfaceError("No images to attack. Received: images.shape[0] == 0.")
    check_goal(goal, model, n=n)
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low < high):
        raise AdvfaceError(
            f"The search bracket needs 0 < low < high. Received: low={low!r}, high={high!r}. "
            "Try low=0.25/255, high=32/255 (Linf)."
        )
    check_positive(steps=steps)
    mask = prepare_mask(mask, images.shape)
    seed = _seed(seed)
    lower = np.full(n, float(low))
    upper = np.full(n, np.inf)
    found = images.copy()
    calls = 0

    def attack(epsilon: float, index: np.ndarray) -> AttackResult:
        nonlocal calls
        calls += 1
        sub_mask = None if mask is None else mask[index]
        return _make(make_attack, epsilon)(model, images[index], goal.subset(index), mask=sub_mask, seed=seed)

    # 1. Everything at the top of the bracket.
    everyone = np.arange(n)
    top = attack(float(high), everyone)
    fooled = np.asarray(top.success, bool)
    upper[fooled] = high
    found[fooled] = top.images[fooled]
    lower[~fooled] = high
    clean = np.asarray(top.clean_success, bool)
    upper[clean], lower[clean], found[clean] = 0.0, 0.0, images[clean]
    report(progress, 1, steps + 1, "bisect", searching=int(np.sum(fooled & ~clean)))

    # 2. Bisection rounds, one call per distinct midpoint.
    for r in range(steps):
        active = np.flatnonzero(np.isfinite(upper) & (upper > 0))
        middle = np.sqrt(lower[active] * upper[active])
        for epsilon in np.unique(middle):
            index = active[middle == epsilon]
            result = attack(float(epsilon), index)
            ok = np.asarray(result.success, bool)
            upper[index[ok]] = epsilon
            found[index[ok]] = result.images[ok]
            lower[index[~ok]] = epsilon
        report(progress, r + 2, steps + 1, "bisect", searching=len(active))

    return MinimalPerturbation(
        epsilons=upper,
        lower=lower,
        images=found,
        attack=top.attack,
        goal=top.goal,
        norm=top.norm,
        low=float(low),
        high=float(high),
        steps=int(steps),
        calls=calls,
        seed=seed,
        seconds=time.perf_counter() - start,
    )


# --- Verification (1:1) --------------------------------------------------------------------------------


def tar_at_far(genuine_distances, impostor_distances, target_far: float) -> float:
    """True-accept rate at the threshold calibrated to a false-accept rate.

    The threshold is :func:`~advface.verification.calibrate_threshold`'s: the largest one whose FAR on
    ``impostor_distances`` is at most ``target_far`` (accept when ``distance <= threshold``).

    Args:
        genuine_distances: ``(G,)`` distances of same-person pairs.
        impostor_distances: ``(I,)`` distances of different-person pairs.
        target_far: in ``(0, 1)``; FARs below ``1 / I`` cannot be measured (the threshold then rejects
            every impostor).

    Returns:
        The share of genuine pairs accepted.
    """
    return _calibrate(genuine_distances, impostor_distances, target_far).tar


@dataclass(frozen=True)
class VerificationReport:
    """1:1 verification at one threshold, clean and under attack (:func:`verification_under_attack`).

    Attributes:
        target_far: the FAR the threshold was calibrated at (on the clean pairs).
        threshold: accept when ``distance <= threshold``.
        tar_clean: genuine pairs accepted, clean.
        tar_attacked: genuine pairs accepted after a dodging attack (lower is a stronger attack).
        far_clean: impostor pairs accepted, clean (at most ``target_far``).
        far_attacked: impostor pairs accepted after an impersonation attack, or ``None`` when none was
            given (higher is a stronger attack).
        num_genuine, num_impostor: clean pairs used for calibration.
    """

    target_far: float
    threshold: float
    tar_clean: float
    tar_attacked: float
    far_clean: float
    far_attacked: float | None
    num_genuine: int
    num_impostor: int

    def format(self) -> str:
        """Two lines of text: TAR and FAR, clean and under attack."""
        far = "-" if self.far_attacked is None else _percent(self.far_attacked)
        return (
            f"threshold {self.threshold:.4g} (FAR {self.target_far:g}, {self.num_impostor} impostor pairs)\n"
            f"TAR clean {_percent(self.tar_clean)}, under dodging {_percent(self.tar_attacked)}; "
            f"FAR clean {_percent(self.far_clean)}, under impersonation {far}"
        )


def verification_under_attack(
    clean_genuine_distances,
    attacked_genuine_distances,
    impostor_distances,
    attacked_impostor_distances=None,
    *,
    target_far: float,
) -> VerificationReport:
    """TAR and FAR clean and under attack, all at the threshold calibrated on the clean pairs.

    Args:
        clean_genuine_distances: ``(G,)`` same-person pair distances, clean.
        attacked_genuine_distances: ``(G',)`` same-person pair distances after dodging one side.
        impostor_distances: ``(I,)`` different-person pair distances, clean (calibrate the threshold).
        attacked_impostor_distances: ``(I',)`` different-person pair distances after impersonating, or
            ``None``.
        target_far: in ``(0, 1)``.
    """
    calibration = _calibrate(clean_genuine_distances, impostor_distances, target_far)
    threshold = calibration.threshold
    dodged = _distances(attacked_genuine_distances, "attacked_genuine_distances")
    far_attacked = None
    if attacked_impostor_distances is not None:
        impersonated = _distances(attacked_impostor_distances, "attacked_impostor_distances")
        far_attacked = float(np.mean(impersonated <= threshold))
    return VerificationReport(
        target_far=float(target_far),
        threshold=threshold,
        tar_clean=calibration.tar,
        tar_attacked=float(np.mean(dodged <= threshold)),
        far_clean=calibration.far,
        far_attacked=far_attacked,
        num_genuine=calibration.num_genuine,
        num_impostor=calibration.num_impostor,
    )


def _calibrate(genuine, impostor, target_far):
    genuine = _distances(genuine, "genuine_distances")
    impostor = _distances(impostor, "impostor_distances")
    if not (isinstance(target_far, int | float | np.floating) and 0.0 < target_far < 1.0):
        raise AdvfaceError(f"`target_far` must be in (0, 1). Received: target_far={target_far!r}.")
    same = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    return calibrate_threshold(np.concatenate([genuine, impostor]), same, target_far=float(target_far))


# --- Identification (1:N) ------------------------------------------------------------------------------


def accuracy_at_k(ranked, true_labels, k: int = 1, *, open_set: bool = False) -> float:
    """Share of probes whose true identity is among the first ``k`` candidates (rank-k accuracy).

    Args:
        ranked: per probe the candidates, best first: a ``(N, K)`` array-like of labels, or the list of
            :class:`~advface.verification.Identification` that ``Gallery.search(probes, k=K)`` returns.
        true_labels: ``(N,)`` the probes' identities. Labels are compared as text.
        k: ``1 <= k <= K``. Rows shorter than ``k`` (a gallery with fewer identities) count as searched.
        open_set: for ``Identification`` results, count only candidates within the gallery's threshold
            (a probe rejected as unknown is a miss at every ``k``).
    """
    rows, longest = [], 0
    for item in ranked:
        if isinstance(item, Identification):
            longest = max(longest, len(item.matches))
            matches = [m for m in item.matches if not open_set or m.distance <= item.threshold]
            rows.append([m.label for m in matches])
        else:
            rows.append([str(x) for x in np.asarray(item, object).reshape(-1)])
            longest = max(longest, len(rows[-1]))
    truth = [str(x) for x in _sequence(true_labels, "true_labels")]
    if len(rows) != len(truth):
        raise AdvfaceError(
            f"One candidate list per true label. Received: {len(rows)} rankings, {len(truth)} labels."
        )
    if not truth:
        raise AdvfaceError("No probes. Received: 0 rankings.")
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= max(longest, 1):
        raise AdvfaceError(
            f"`k` must be an integer in [1, {longest}] (the candidates per probe). Received: k={k!r}. "
            "Search with a larger k: gallery.search(probes, k=...)."
        )
    return float(np.mean([label in row[: int(k)] for row, label in zip(rows, truth, strict=True)]))


@dataclass(frozen=True)
class PrecisionRecall:
    """Per-class and averaged precision, recall and F1 (:func:`precision_recall`).

    Attributes:
        classes: ``C`` labels: the sorted union of true and predicted labels.
        precision, recall, f1: ``(C,)`` per class (0 where undefined, as scikit-learn's
            ``zero_division=0``).
        support: ``(C,)`` true instances of each class.
        macro_precision, macro_recall, macro_f1: unweighted means over ``classes``.
        weighted_precision, weighted_recall, weighted_f1: means weighted by ``support``.
        accuracy: share of exact predictions (a rejection is wrong).
        rejected: predictions that were ``None`` (open-set "unknown").
    """

    classes: tuple
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_precision: float
    weighted_recall: float
    weighted_f1: float
    accuracy: float
    rejected: int


def precision_recall(true_labels, predicted_labels) -> PrecisionRecall:
    """Macro and weighted precision, recall and F1 of identification decisions (scikit-learn's
    definitions with ``zero_division=0``: the siamese notebook's metrics).

    For class ``c``: precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)``, F1 ``2 tp / (2 tp + fp +
    fn)``; macro averages weigh each class of the union of true and predicted labels equally, weighted
    averages by the class's support.

    Args:
        true_labels: ``(N,)`` identities or class indices.
        predicted_labels: ``(N,)`` decisions: labels, ``None`` for a probe rejected as unknown (a false
            negative of its true class, and not a class of its own), or
            :class:`~advface.verification.Identification` results (their ``label``).
    """
    truth = list(_sequence(true_labels, "true_labels"))
    predicted = [
        p.label if isinstance(p, Identification) else p
        for p in _sequence(predicted_labels, "predicted_labels")
    ]
    if len(truth) != len(predicted):
        raise AdvfaceError(
            f"One prediction per true label. Received: {len(truth)} true labels, {len(predicted)} "
            "predicted labels."
        )
    if not truth or any(t is None for t in truth):
        raise AdvfaceError("`true_labels` must be a non-empty sequence of labels without None.")
    rejected = np.array([p is None for p in predicted])
    y_true, y_pred = _common_labels(truth, [p for p in predicted if p is not None])
    classes = np.union1d(y_true, y_pred)
    t = np.searchsorted(classes, y_true)
    p = np.full(len(truth), -1)
    p[~rejected] = np.searchsorted(classes, y_pred)
    c = len(classes)
    tp = np.bincount(t[t == p], minlength=c).astype(np.float64)
    support = np.bincount(t, minlength=c).astype(np.float64)
    predicted_count = np.bincount(p[p >= 0], minlength=c).astype(np.float64)
    precision = _divide(tp, predicted_count)
    recall = _divide(tp, support)
    f1 = _divide(2 * tp, support + predicted_count)  # 2 tp / (2 tp + fp + fn)
    weights = support / support.sum()
    return PrecisionRecall(
        classes=tuple(classes.tolist()),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support.astype(np.int64),
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        weighted_precision=float(weights @ precision),
        weighted_recall=float(weights @ recall),
        weighted_f1=float(weights @ f1),
        accuracy=float(np.mean(t == p)),
        rejected=int(rejected.sum()),
    )


def _common_labels(truth: list, predicted: list) -> tuple[np.ndarray, np.ndarray]:
    """Both as numbers when both are, else both as text (so 3 and "3" are one class)."""
    a, b = np.asarray(truth), np.asarray(predicted)
    numeric = a.dtype.kind in "iub" and (b.dtype.kind in "iub" or b.size == 0)
    if numeric:
        return a.astype(np.int64), b.astype(np.int64)
    return np.asarray([str(x) for x in truth]), np.asarray([str(x) for x in predicted], dtype=str)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


# --- Transfer between models ---------------------------------------------------------------------------


def resize_for_model(images, model) -> np.ndarray:
    """Chips resized to ``model``'s input size (bilinear with antialiasing), float32 in ``[0, 1]``.

    Only the size changes: a chip aligned for one template (dlib's 150 px) resized for a model of another
    (OpenFace's 96 px) keeps its own face placement. Unchanged when the size already fits.
    """
    images = check_images(images)
    size = int(model.input_size)
    if images.shape[1:3] == (size, size):
        return images
    resized = tf.image.resize(images, (size, size), method="bilinear", antialias=True)
    return np.clip(resized.numpy(), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class TransferMatrix:
    """Success of adversarial images crafted on one model (rows) judged on others (columns).

    Attributes:
        sources: ``S`` names of where the images came from (usually the model attacked).
        targets: ``T`` names of the models that judged them.
        rates: ``(S, T)`` success rates (over the images not fooled clean when ``exclude_clean``).
        success: ``(S, T, N)`` bool per image.
        clean_success: ``(T, N)`` bool, the clean images (resized the same way) already met the target's
            goal; ``None`` when no clean images were given.
        exclude_clean: whether ``rates`` leave those images out.
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    rates: np.ndarray
    success: np.ndarray = field(repr=False)
    clean_success: np.ndarray | None = field(repr=False)
    exclude_clean: bool = False

    @property
    def clean_rates(self) -> np.ndarray | None:
        """``(T,)`` share of clean images that met each target's goal unattacked (``None`` if unknown)."""
        return None if self.clean_success is None else self.clean_success.mean(axis=1)

    def format(self) -> str:
        """A text table, one row per source and a ``clean`` row when known; rates in percent."""
        width = max(12, *(len(n) for n in self.sources + self.targets)) + 2
        title = "success" + (" (images not fooled clean)" if self.exclude_clean else "")
        lines = [f"{title}: rows crafted on, columns judged by", ""]
        lines.append("".ljust(width) + "".join(t.rjust(width) for t in self.targets))
        rows = list(zip(self.sources, self.rates, strict=True))
        if self.clean_success is not None:
            rows.append(("clean", self.clean_rates))
        for name, rates in rows:
            lines.append(name.ljust(width) + "".join(_percent(r).rjust(width) for r in rates))
        return "\n".join(lines)


def transfer_matrix(
    sources: Mapping[str, object],
    models: Mapping[str, object],
    goals: Mapping[str, Goal],
    *,
    clean_images=None,
    exclude_clean: bool = False,
    batch_size: int = 32,
) -> TransferMatrix:
    """Judge adversarial images crafted on some models by other models (a fresh forward pass of each).

    Images are judged at the target model's input size: where sizes differ they are resized with
    :func:`resize_for_model` (bilinear, antialiased). Resizing does not re-align: models with different
    templates see the face placed as the source's template placed it, so a low rate may partly be the
    template mismatch; give ``clean_images`` to see the clean baseline under the same resizing, and build
    each target's goal from the resized clean chips (``target.embed(resize_for_model(clean, target))``).

    Args:
        sources: name -> adversarial images ``(N, H, W, 3)``, an
            :class:`~advface.attacks.base.AttackResult` or anything with ``.images``. All the same ``N``
            images, in the same order.
        models: name -> zoo ``FaceModel``, the targets (columns, in this order).
        goals: target name -> the goal judged on that target (built with that model's embeddings or
            classes, one row per image when paired).
        clean_images: ``(N, H, W, 3)`` the clean chips, to judge which already met each goal.
        exclude_clean: rates over the images not fooled clean only (needs ``clean_images``).
        batch_size: forward pass batch.

    Returns:
        A :class:`TransferMatrix`.
    """
    if not sources or not models:
        raise AdvfaceError(
            f"A transfer matrix needs sources and target models. Received: {len(sources)} sources, "
            f"{len(models)} models."
        )
    missing = [name for name in models if name not in goals]
    if missing:
        raise AdvfaceError(
            f"Every target model needs a goal. Received: no goal for {', '.join(missing)}. Known goals: "
            f"{', '.join(goals) or 'none'}."
        )
    if exclude_clean and clean_images is None:
        raise AdvfaceError(
            "`exclude_clean=True` needs the clean images. Received: clean_images=None. Pass clean_images."
        )
    adversarial = {
        name: check_images(getattr(x, "images", x), name=f"sources[{name!r}]") for name, x in sources.items()
    }
    counts = {name: len(x) for name, x in adversarial.items()}
    if clean_images is not None:
        clean_images = check_images(clean_images, name="clean_images")
        counts["clean_images"] = len(clean_images)
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise AdvfaceError(
            "Every source must hold the same images, in the same order (at least one). Received: "
            + ", ".join(f"{name}: {n}" for name, n in counts.items())
            + " images."
        )
    n = next(iter(counts.values()))
    success = np.zeros((len(adversarial), len(models), n), bool)
    clean_success = None if clean_images is None else np.zeros((len(models), n), bool)
    for j, (target, model) in enumerate(models.items()):
        goal = goals[target]
        check_goal(goal, model, n=n)

        def decide(images, model=model, goal=goal):
            outputs = model.embed(resize_for_model(images, model), batch_size=batch_size)
            return np.asarray(judge(goal, model, outputs).success, bool)

        for i, images in enumerate(adversarial.values()):
            success[i, j] = decide(images)
        if clean_images is not None:
            clean_success[j] = decide(clean_images)
    counted = np.broadcast_to(~clean_success if exclude_clean else np.ones(n, bool), success.shape)
    totals = counted.sum(axis=2)
    rates = np.where(totals > 0, (success & counted).sum(axis=2) / np.maximum(totals, 1), np.nan)
    return TransferMatrix(
        sources=tuple(adversarial),
        targets=tuple(models),
        rates=rates,
        success=success,
        clean_success=clean_success,
        exclude_clean=bool(exclude_clean),
    )


# --- Sanity flags ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SanityFlag:
    """A warning that an evaluation's numbers may mislead.

    Attributes:
        name: ``"zero_gradients"``, ``"non_monotone"``, ``"black_box_beats_white_box"``,
            ``"lost_after_rounding"`` or ``"clean_success"``.
        message: what was seen, what it means and what to do.
        images: indices of the images concerned.
    """

    name: str
    message: str
    images: tuple[int, ...]


def sanity_flags(
    result: AttackResult | None = None,
    *,
    curve: Curve | None = None,
    white_box: AttackResult | None = None,
    black_box: AttackResult | None = None,
    model=None,
    images=None,
    goal: Goal | None = None,
    epsilon: float | None = None,
    norm: str | None = None,
    loss: str = "auto",
    mask=None,
    seed: int | None = None,
    tolerance: int = 1,
) -> list[SanityFlag]:
    """Run the checks whose inputs are given; an empty list means no warning.

    - ``result``: :func:`flag_clean_success` and :func:`flag_lost_after_rounding`.
    - ``curve``: :func:`flag_non_monotone` (a drop of more than ``tolerance`` images).
    - ``white_box`` and ``black_box``: :func:`flag_black_box_beats_white_box`.
    - ``model``, ``images`` and ``goal``: :func:`flag_zero_gradients` at a random point within
      ``epsilon`` in ``norm`` (default: those of ``result`` or ``white_box``) for objective ``loss``.
    """
    flags = []
    if result is not None:
        flags += [flag_clean_success(result), flag_lost_after_rounding(result)]
    if curve is not None:
        flags.append(flag_non_monotone(curve, tolerance=tolerance))
    if (white_box is None) != (black_box is None):
        raise AdvfaceError(
            "Comparing attacks needs both `white_box` and `black_box` results at the same budget. "
            f"Received: white_box={_name(white_box)}, black_box={_name(black_box)}."
        )
    if white_box is not None:
        flags.append(flag_black_box_beats_white_box(white_box, black_box))
    given = {"model": model, "images": images, "goal": goal}
    if any(v is not None for v in given.values()):
        absent = [k for k, v in given.items() if v is None]
        if absent:
            raise AdvfaceError(
                f"The gradient check needs model, images and goal. Received: {', '.join(absent)}=None."
            )
        reference = result if result is not None else white_box
        if epsilon is None and reference is not None:
            epsilon = reference.epsilon
        if norm is None:
            norm = reference.norm if reference is not None else "linf"
        flags.append(
            flag_zero_gradients(
                model, images, goal, epsilon=epsilon, norm=norm, loss=loss, mask=mask, seed=seed
            )
        )
    return [f for f in flags if f is not None]


def flag_zero_gradients(
    model,
    images,
    goal: Goal,
    *,
    epsilon: float | None,
    norm: str = "linf",
    loss: str = "auto",
    mask=None,
    seed: int | None = None,
    batch_size: int = 32,
) -> SanityFlag | None:
    """Flag images whose objective gradient is exactly zero, or not finite, near them.

    The gradient of :func:`~advface.attacks.base.goal_objective` (what the gradient attacks follow) is
    taken at a random point within ``epsilon`` of each image (uniform in the box or ball), not at the
    clean image: dodging one's own clean embedding legitimately has zero gradient there. Within the mask,
    if one is given.

    Args:
        model: a zoo ``FaceModel``.
        images: ``(N, S, S, 3)`` float32 chips in ``[0, 1]``.
        goal: the goal.
        epsilon: the radius of the random point (the attack's budget).
        norm: ``"linf"`` or ``"l2"``.
        loss: the attack's objective (``advface.attacks.base.LOSSES``).
        mask: optional region the attack may change.
        seed: for the random points; drawn when ``None``.
        batch_size: images per gradient pass.
    """
    images = check_images(images, size=(model.input_size, model.input_size))
    n = len(images)
    check_goal(goal, model, n=n)
    if epsilon is None or not (np.isfinite(epsilon) and epsilon > 0):
        raise AdvfaceError(
            f"The gradient check needs the attack's budget. Received: epsilon={epsilon!r}. Pass epsilon > 0."
        )
    if norm not in ("linf", "l2"):
        raise AdvfaceError(f"Unknown norm. Received: norm={norm!r}. Known: linf, l2.")
    if loss not in LOSSES:
        raise AdvfaceError(f"Unknown loss. Received: loss={loss!r}. Known: {', '.join(LOSSES)}.")
    check_positive(batch_size=batch_size)
    mask = prepare_mask(mask, images.shape)
    seed = _seed(seed)
    loss = default_loss(goal_name(goal)) if loss == "auto" else loss
    dead = np.zeros(n, bool)
    for b, first in enumerate(range(0, n, batch_size)):
        # 1. A random point within the budget (and the mask), inside [0, 1].
        index = np.arange(first, min(first + batch_size, n))
        x = tf.constant(images[index])
        m = tf.constant(mask[index]) if mask is not None else tf.ones_like(x)
        x_near = x + in_box(x, random_start(tf.shape(x), float(epsilon), norm, [seed, b]) * m)
        # 2. The objective's gradient there; a disconnected graph is a zero gradient.
        t = goal_tensors(goal.subset(index), model, len(index))
        with tf.GradientTape() as tape:
            tape.watch(x_near)
            outputs = model.keras_model(x_near, training=False)
            objective = goal_objective(t.kind, t.metric, t.tensors, outputs, loss)
            total = tf.reduce_sum(objective)
        grad = tape.gradient(total, x_near)
        g = np.zeros(x.shape, np.float32) if grad is None else (grad * m).numpy()
        flat = g.reshape(len(index), -1)
        broken = ~np.isfinite(flat).all(axis=1) | ~np.isfinite(objective.numpy())
        dead[index] = broken | ~np.any(flat != 0, axis=1)
    if not dead.any():
        return None
    affected = tuple(int(i) for i in np.flatnonzero(dead))
    return SanityFlag(
        name="zero_gradients",
        message=(
            f"The gradient of the {loss!r} objective is exactly zero or not finite near {len(affected)} of "
            f"{n} images (images {_list(affected)}): gradient attacks cannot move them, so their failure "
            "says nothing about robustness (masked gradients: a non-differentiable or stop-gradient layer, "
            "a saturated softmax). Try loss='margin' or 'dlr', a gradient-free attack, or remove the "
            "layer that blocks the gradient."
        ),
        images=affected,
    )


def flag_non_monotone(curve: Curve, *, tolerance: int = 1) -> SanityFlag | None:
    """Flag a :class:`Curve` whose successes drop by more than ``tolerance`` images as epsilon grows
    (compared with the best of all smaller budgets)."""
    if isinstance(tolerance, bool) or int(tolerance) != tolerance or tolerance < 0:
        raise AdvfaceError(f"`tolerance` must be an integer >= 0. Received: tolerance={tolerance!r}.")
    success = np.asarray(curve.success, bool)
    counts = success.sum(axis=1)
    best_before = np.maximum.accumulate(counts)
    drops = np.concatenate([[0], best_before[:-1] - counts[1:]])
    if drops.max(initial=0) <= tolerance:
        return None
    worst = int(drops.argmax())
    before = int(best_before[worst - 1])
    ever = np.maximum.accumulate(success, axis=0)
    lost = np.zeros(success.shape[1], bool)
    for e in np.flatnonzero(drops > tolerance):
        lost |= ever[e - 1] & ~success[e]
    affected = tuple(int(i) for i in np.flatnonzero(lost))
    return SanityFlag(
        name="non_monotone",
        message=(
            f"Success fell from {before} to {int(counts[worst])} images as epsilon grew to "
            f"{_epsilon_text(curve.epsilons[worst], curve.norm)}: a larger budget contains every smaller "
            "one, so the attack is not finding what exists (too few steps, a step size unsuited to the "
            "budget, or luck). Use more steps or restarts, and read the success at a budget as at least "
            "the best at any smaller budget."
        ),
        images=affected,
    )


def flag_black_box_beats_white_box(white_box: AttackResult, black_box: AttackResult) -> SanityFlag | None:
    """Flag a black-box (gradient-free) attack that fooled more images than a white-box one at the same
    budget: with honest gradients the white-box attack should do at least as well."""
    for name, r in (("white_box", white_box), ("black_box", black_box)):
        if not isinstance(r, AttackResult):
            raise AdvfaceError(f"`{name}` must be an AttackResult. Received: {type(r).__name__}.")
    if len(white_box.success) != len(black_box.success):
        raise AdvfaceError(
            "Compare attacks on the same images. Received: "
            f"{len(white_box.success)} white-box and {len(black_box.success)} black-box images."
        )
    same_budget = white_box.norm == black_box.norm and (
        white_box.epsilon is not None
        and black_box.epsilon is not None
        and math.isclose(white_box.epsilon, black_box.epsilon, rel_tol=1e-6)
    )
    if not same_budget:
        raise AdvfaceError(
            "Compare attacks at the same budget. Received: white_box "
            f"{white_box.norm} epsilon={white_box.epsilon!r}, black_box {black_box.norm} "
            f"epsilon={black_box.epsilon!r}."
        )
    white = np.asarray(white_box.success, bool)
    black = np.asarray(black_box.success, bool)
    if black.sum() <= white.sum():
        return None
    affected = tuple(int(i) for i in np.flatnonzero(black & ~white))
    return SanityFlag(
        name="black_box_beats_white_box",
        message=(
            f"{black_box.attack} (black box) fooled {int(black.sum())} images, {white_box.attack} (white "
            f"box) only {int(white.sum())} at the same budget: the white-box gradients are probably "
            "masked or misleading, and its success rate understates the model's weakness. Report the "
            "best attack per image, check the gradients (flag_zero_gradients) and try another loss."
        ),
        images=affected,
    )


def flag_lost_after_rounding(result: AttackResult) -> SanityFlag | None:
    """Flag images fooled in floating point but not once the adversarial image is rounded to 8 bits."""
    lost = np.asarray(result.success, bool) & ~np.asarray(result.success_8bit, bool)
    if not lost.any():
        return None
    affected = tuple(int(i) for i in np.flatnonzero(lost))
    return SanityFlag(
        name="lost_after_rounding",
        message=(
            f"{len(affected)} images (images {_list(affected)}) are fooled only before rounding to 8 bits: "
            "saved as an image file, they no longer work. Report success_8bit, or attack with a slightly "
            "larger budget or more steps so the margin survives rounding."
        ),
        images=affected,
    )


def flag_clean_success(result: AttackResult) -> SanityFlag | None:
    """Flag images that met the goal before any attack (they inflate the success rate)."""
    clean = np.asarray(result.clean_success, bool)
    if not clean.any():
        return None
    affected = tuple(int(i) for i in np.flatnonzero(clean))
    return SanityFlag(
        name="clean_success",
        message=(
            f"{len(affected)} of {len(clean)} images (images {_list(affected)}) met the goal without any "
            "attack, so the success rate overstates the attack. Report success_rate(result, "
            "exclude_clean=True), or check the goal (threshold, labels, references)."
        ),
        images=affected,
    )


# --- Helpers --------------------------------------------------------------------------------------------


def _make(make_attack: MakeAttack, epsilon: float):
    """``make_attack(epsilon)``, checked to be an attack with that budget."""
    if hasattr(make_attack, "_attack_batch") or not callable(make_attack):
        raise AdvfaceError(
            "`make_attack` must be a function epsilon -> attack, so that settings derived from the budget "
            f"(PGD's step_size) follow it. Received: {make_attack!r}. Pass e.g. "
            "make_attack=lambda epsilon: PGD(epsilon=epsilon, steps=40)."
        )
    attack = make_attack(float(epsilon))
    budget = getattr(attack, "epsilon", None)
    if not callable(attack) or budget is None or not math.isclose(budget, epsilon, rel_tol=1e-6):
        raise AdvfaceError(
            f"`make_attack({float(epsilon):.6g})` must return an attack with that epsilon. Received: "
            f"{attack!r}. Pass the argument on: lambda epsilon: PGD(epsilon=epsilon, ...)."
        )
    return attack


def _epsilons(epsilons) -> np.ndarray:
    e = np.asarray(epsilons, np.float64)
    if e.ndim != 1 or not len(e) or not np.isfinite(e).all() or e.min() <= 0 or np.any(np.diff(e) <= 0):
        raise AdvfaceError(
            f"`epsilons` must be a strictly increasing list of budgets > 0. Received: epsilons={e.tolist()}. "
            "Sort them, e.g. sorted(set(epsilons))."
        )
    return e


def _bools(x, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or (a.dtype != bool and not np.isin(a, (0, 1)).all()):
        raise AdvfaceError(
            f"`{name}` must be (N,) booleans. Received: {name}.shape={a.shape}, dtype={a.dtype}."
        )
    if n is not None and len(a) != n:
        raise AdvfaceError(f"`{name}` needs one value per image. Received: {len(a)} for {n} images.")
    return a.astype(bool)


def _distances(x, name: str) -> np.ndarray:
    d = np.asarray(x, np.float64)
    if d.ndim != 1 or not len(d) or not np.isfinite(d).all():
        raise AdvfaceError(
            f"`{name}` must be (P,) finite distances, at least one. Received: {name}.shape={d.shape}."
        )
    return d


def _sequence(x, name: str) -> list:
    if isinstance(x, str) or not hasattr(x, "__len__"):
        raise AdvfaceError(f"`{name}` must be a sequence of labels, one per probe. Received: {x!r}.")
    return list(x.tolist() if isinstance(x, np.ndarray) else x)


def _seed(seed: int | None) -> int:
    return int(np.random.default_rng().integers(2**31 - 1)) if seed is None else int(seed)


def _percent(rate) -> str:
    return "-" if rate is None or not np.isfinite(rate) else f"{100 * rate:.1f}%"


def _epsilon_text(epsilon: float, norm: str) -> str:
    return f"{epsilon * 255:.4g}/255" if norm == "linf" else f"{epsilon:.4g}"


def _list(indices: tuple[int, ...], most: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:most])
    return shown + (f" and {len(indices) - most} more" if len(indices) > most else "")


def _name(result) -> str:
    return "None" if result is None else getattr(result, "attack", type(result).__name__)


__all__ = [
    "Curve",
    "MinimalPerturbation",
    "PrecisionRecall",
    "SanityFlag",
    "TransferMatrix",
    "VerificationReport",
    "accuracy_at_k",
    "flag_black_box_beats_white_box",
    "flag_clean_success",
    "flag_lost_after_rounding",
    "flag_non_monotone",
    "flag_zero_gradients",
    "minimal_epsilon",
    "minimal_perturbation",
    "precision_recall",
    "resize_for_model",
    "sanity_flags",
    "success_curve",
    "success_rate",
    "summary",
    "tar_at_far",
    "transfer_matrix",
    "verification_under_attack",
]
