"""Evaluation of semantic attacks: success summary, attribute-importance ranking, curves and figures.

Pérez et al., "Towards Assessing and Characterizing the Semantic Robustness of Face Recognition" (2022),
Sec. 3.5; the source's ``eval_files`` and chunk post-processing (``reference/algorithms.md`` 2.6, 2.8).

A successful attack moves a latent code by ``D delta``, where ``delta`` holds one coefficient per attribute
direction and the budget region is ``delta^T M delta <= 1`` with ``M = diag(1 / m_i^2)``. Its size is the
M-norm ``||delta||_M = sqrt(delta^T M delta)``: every ``magnitudes`` argument here is this norm, the square
root of what the source stores under that name.

``results.txt`` is written in the source's format, ``key:value`` per line, a blank line, then the ranking::

    successes:200
    instances:200
    rate:100.00
    avg_mag:9.82

    importance-order:gender>age>eyeglasses>pose>smile
    order-pvals:3.87E-25,2.26E-02,3.74E-02,1.48E-09
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from scipy import stats

from advface.errors import AdvfaceError
from advface.images import check_images

NONE_FOUND = "NoneFound"
UNDEFINED = "Undefined"


@dataclass(frozen=True)
class Ranking:
    """Attributes ordered by how much of the successful perturbations they carry.

    Attributes:
        order: attributes established as most important, first to last. Empty when the first Friedman test
            finds no difference ("NoneFound"); shorter than all attributes when a later one stops.
        unranked: the attributes a Friedman test could not separate, in the order given; empty when the
            ranking is complete.
        p_values: ``len(order) - 1`` one-sided Wilcoxon signed-rank p-values (paired, ``alternative=
            "greater"``) that ``order[i]`` contributes more than ``order[i + 1]``. No multiple-comparison
            correction is applied (as in the source); apply one (e.g. Holm) to these if you need it.
        friedman: the Friedman chi-square p-value of each elimination step that ran (``n_attr - 2`` when
            complete; the last one is the failing test when the ranking stopped).
        found: True when every attribute is ranked.
    """

    order: tuple[str, ...]
    unranked: tuple[str, ...]
    p_values: tuple[float, ...]
    friedman: tuple[float, ...]
    found: bool

    def text(self) -> str:
        """The two ranking lines of ``results.txt``, as the source writes them.

        ``importance-order:NoneFound`` / ``order-pvals:Undefined`` when nothing was established. A partial
        ranking (the source stops without one) lists its leaders and then the unseparated rest joined by
        ``=``, e.g. ``gender>age>eyeglasses=pose=smile``.
        """
        if not self.order:
            return f"importance-order:{NONE_FOUND}\norder-pvals:{UNDEFINED}"
        order = ">".join(self.order + (("=".join(self.unranked),) if self.unranked else ()))
        p_values = ",".join(f"{p:.2E}" for p in self.p_values) or UNDEFINED
        return f"importance-order:{order}\norder-pvals:{p_values}"


@dataclass(frozen=True)
class AttackSummary:
    """How often an attack succeeded, and with how large a perturbation.

    Attributes:
        successes: identities for which the attack found an adversarial example.
        instances: identities attacked.
        rate: ``successes / instances``, a fraction in ``[0, 1]`` (``text`` prints it as a percentage).
        avg_mag: mean M-norm ``||delta||_M`` over the successes; NaN when there are none.
    """

    successes: int
    instances: int
    rate: float
    avg_mag: float

    def text(self) -> str:
        """The summary lines of the source's ``results.txt``: ``successes:6``, ``instances:200``,
        ``rate:3.00`` (percent) and ``avg_mag:1.00`` (``avg_mag:nan`` without successes)."""
        return (
            f"successes:{self.successes}\ninstances:{self.instances}\n"
            f"rate:{100.0 * self.rate:.2f}\navg_mag:{self.avg_mag:.2f}"
        )


def contributions(deltas, budgets) -> np.ndarray:
    """Each attribute's share of every perturbation's squared M-norm.

    ``c_i = (delta_i^2 / m_i^2) / sum_j (delta_j^2 / m_j^2)``, so every row sums to 1 and an attribute with
    twice the budget contributes a quarter as much for the same coefficient. A row of zeros (the clean
    face was already misidentified, so a zero perturbation "succeeded") has no direction: it gets ``1/k``
    everywhere. Such rows change no test of :func:`rank_attributes`: the tie-corrected Friedman statistic
    and the attribute totals' order are unchanged, and Wilcoxon drops zero differences.

    Args:
        deltas: ``(n, k)`` attribute coefficients of ``n`` perturbations.
        budgets: ``(k,)`` positive budgets ``m_i`` (the semi-axes of the budget ellipsoid).

    Returns:
        ``(n, k)`` float64 contributions, rows summing to 1.
    """
    deltas, budgets = _check_deltas(deltas, budgets)
    parts = deltas**2 / budgets**2
    totals = parts.sum(axis=1, keepdims=True)
    out = np.full(parts.shape, 1.0 / parts.shape[1])
    moved = totals[:, 0] > 0
    out[moved] = parts[moved] / totals[moved]
    return out


def rank_attributes(deltas, budgets, names, *, alpha: float = 0.05) -> Ranking:
    """Rank attributes by their contribution to successful perturbations (the source's procedure).

    1. ``n_attr - 2`` times, on the attributes not ranked yet: a Friedman chi-square test on their
       contribution columns; if ``p >= alpha`` stop. Otherwise the attribute with the largest total
       contribution (first on ties) is the next in the order.
    2. The last two: a two-sided Wilcoxon signed-rank test; if ``p > alpha`` they keep the order given in
       ``names`` (as in the source: the data then do not support that order, and their reported p-value
       shows it), else the one-sided test decides.
    3. Reported p-values: one-sided Wilcoxon (``alternative="greater"``) between consecutive attributes of
       the order. Nothing corrects for the several tests (as in the source): see :class:`Ranking`.

    Contributions are normalised once over all attributes (:func:`contributions`), as in the source. A test
    whose p-value is undefined (all values tied) counts as not significant. Fewer than two perturbations
    give "NoneFound" without any test.

    Args:
        deltas: ``(n, k)`` coefficients of the successful perturbations, ``k >= 2``.
        budgets: ``(k,)`` positive budgets ``m_i``.
        names: ``k`` attribute names, in the columns' order (taken from the attack, so ablations with fewer
            attributes work, unlike the source's fixed five).
        alpha: significance level of every test, in ``(0, 1)``.

    Returns:
        The :class:`Ranking`.
    """
    names = tuple(str(n) for n in names)
    c = contributions(deltas, budgets)
    if len(names) != c.shape[1] or len(set(names)) != len(names):
        raise AdvfaceError(
            f"`names` must be {c.shape[1]} distinct attribute names, one per column of `deltas`. "
            f"Received: names={list(names)}."
        )
    if not 0.0 < alpha < 1.0:
        raise AdvfaceError(f"`alpha` must be in (0, 1). Received: alpha={alpha!r}.")
    if len(c) < 2:
        return Ranking((), names, (), (), False)
    column = dict(zip(names, c.T, strict=True))
    remaining, order, friedman = list(names), [], []
    # 1. Friedman gate, then the attribute with the largest total contribution.
    for _ in range(len(names) - 2):
        p = _p(stats.friedmanchisquare, *(column[a] for a in remaining))
        friedman.append(p)
        if not p < alpha:
            p_values = _consecutive(order, column)
            return Ranking(tuple(order), tuple(remaining), p_values, tuple(friedman), False)
        winner = remaining[int(np.argmax([column[a].sum() for a in remaining]))]
        order.append(winner)
        remaining.remove(winner)
    # 2. The last two.
    a, b = remaining
    if _p(stats.wilcoxon, column[a], column[b]) <= alpha:
        greater = _p(stats.wilcoxon, column[a], column[b], alternative="greater")
        less = _p(stats.wilcoxon, column[b], column[a], alternative="greater")
        if less < greater:
            a, b = b, a
    order += [a, b]
    return Ranking(tuple(order), (), _consecutive(order, column), tuple(friedman), True)


def summarise(success, magnitudes) -> AttackSummary:
    """Successes, instances, rate and mean M-norm of the successful perturbations.

    Args:
        success: ``(n,)`` bool, one per attacked identity.
        magnitudes: ``(n,)`` M-norms ``||delta||_M``; entries of failed attacks are ignored.
    """
    success, magnitudes = _check_outcomes(success, magnitudes)
    hits = magnitudes[success]
    return AttackSummary(
        successes=int(success.sum()),
        instances=len(success),
        rate=float(success.mean()),
        avg_mag=float(hits.mean()) if hits.size else math.nan,
    )


def accuracy_vs_perturbation(success, magnitudes, radii=None) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of identities still recognised when attacks are limited to M-norm ``r``, for each ``r``.

    ``accuracy(r) = 1 - #{successes with ||delta||_M <= r} / instances``: the source's "fraction of
    instances whose magnitude exceeds r", counting a failed attack as never succeeding. It starts at
    ``1 - (successes with a zero perturbation) / instances`` and reaches ``1 - rate`` at the largest
    successful magnitude. It is an upper bound on robust accuracy: a stronger attack can only lower it.

    Args:
        success: ``(n,)`` bool, one per attacked identity.
        magnitudes: ``(n,)`` M-norms; entries of failed attacks are ignored.
        radii: the radii to evaluate. Default, as the source: 100 points from 0 to the 99th percentile of
            the successful magnitudes, so that a few unconstrained (FAB) outliers do not flatten the plot;
            the curve then stops slightly above ``1 - rate``. Without successes, 0 to 1 (the budget's
            surface).

    Returns:
        ``(radii, accuracy)``, float64 arrays of the same length.
    """
    success, magnitudes = _check_outcomes(success, magnitudes)
    hits = np.sort(magnitudes[success])
    if radii is None:
        top = float(np.percentile(hits, 99)) if hits.size else 0.0
        radii = np.linspace(0.0, top if top > 0 else 1.0, 100)
    radii = np.asarray(radii, dtype=np.float64)
    if radii.ndim != 1 or not radii.size or not np.all(np.isfinite(radii)):
        raise AdvfaceError(f"`radii` must be a 1-D array of finite numbers. Received: radii={radii}.")
    broken = np.searchsorted(hits, radii, side="right")
    return radii, 1.0 - broken / len(success)


def plot_accuracy_vs_perturbation(path, curves: dict) -> Path:
    """Draw accuracy against perturbation size, one line per attack, into a PNG.

    Args:
        path: the PNG to write (folders are created).
        curves: ``{label: (radii, accuracy)}``, e.g. from :func:`accuracy_vs_perturbation`.

    Returns:
        ``path``.
    """
    if not curves:
        raise AdvfaceError("`curves` must hold at least one curve. Received: curves={}.")
    figure = _figure((5.0, 3.6))
    ax = figure.subplots()
    for label, (radii, accuracy) in curves.items():
        ax.plot(np.asarray(radii), np.asarray(accuracy), label=str(label))
    ax.set_xlabel(r"perturbation $\|\delta\|_M$")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, path)


def plot_certified_accuracy(path, correct, radius, *, xlabel: str, title: str = "") -> Path:
    """Certified accuracy against radius (Cohen et al.'s curve): the share of identities classified
    correctly with a certified radius of at least r, for r from 0 to 1.1 x the largest radius.

    Args:
        path: the PNG to write (folders are created).
        correct: ``(N,)`` bool, the smoothed prediction is the identity's own.
        radius: ``(N,)`` certified radii (0 when abstaining).
        xlabel: what the radius measures.
    """
    correct, radius = np.asarray(correct, bool), np.asarray(radius, float)
    radii = np.linspace(0, max(float(radius.max()), 1e-6) * 1.1, 100)
    figure = _figure((5.0, 3.5))
    ax = figure.subplots()
    ax.plot(radii, [(correct & (radius >= r)).mean() for r in radii])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(figure, path)


def success_figure(
    path,
    original,
    adversarial,
    matched,
    *,
    magnitude: float,
    labels=("original", "adversarial", "matched identity"),
) -> Path:
    """One successful attack: the original face, its adversarial edit and the identity it is matched with.

    Args:
        path: the image file to write (PNG; folders are created). The source names it
            ``ori_<A>_adv_<B>``.
        original, adversarial, matched: ``(H, W, 3)`` float images in ``[0, 1]``.
        magnitude: ``||delta||_M`` of the perturbation, shown in the adversarial face's title.
        labels: the three titles.

    Returns:
        ``path``.
    """
    named = {"original": original, "adversarial": adversarial, "matched": matched}
    images = [check_images(np.asarray(image)[None], name=name)[0] for name, image in named.items()]
    if len(labels) != 3:
        raise AdvfaceError(f"`labels` must hold three titles. Received: labels={labels!r}.")
    titles = [labels[0], f"{labels[1]} " + rf"($\|\delta\|_M = {magnitude:.3f}$)", labels[2]]
    figure = _figure((9.0, 3.4))
    for ax, image, title in zip(figure.subplots(1, 3), images, titles, strict=True):
        ax.imshow(image)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    return _save(figure, path)


def write_results(folder, summary: AttackSummary, ranking: Ranking | None) -> Path:
    """Write ``folder/results.txt``: the summary lines, a blank line, the ranking lines.

    Without a ranking (fewer than two successes) the ranking lines say ``NoneFound`` / ``Undefined``, so
    the file always has the same keys.
    """
    ranking = ranking or Ranking((), (), (), (), False)
    path = Path(folder) / "results.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{summary.text()}\n\n{ranking.text()}\n")
    return path


def _check_deltas(deltas, budgets) -> tuple[np.ndarray, np.ndarray]:
    deltas = np.asarray(deltas, dtype=np.float64)
    budgets = np.asarray(budgets, dtype=np.float64)
    if deltas.ndim != 2 or deltas.shape[1] < 2:
        raise AdvfaceError(
            "`deltas` must be (n, k): one row per perturbation, one column per attribute, k >= 2. "
            f"Received: deltas.shape={deltas.shape}."
        )
    if budgets.shape != (deltas.shape[1],) or not np.all(budgets > 0) or not np.all(np.isfinite(budgets)):
        raise AdvfaceError(
            f"`budgets` must hold {deltas.shape[1]} positive numbers, one per attribute. "
            f"Received: budgets={budgets.tolist()}."
        )
    if not np.all(np.isfinite(deltas)):
        raise AdvfaceError("`deltas` must be finite. Received: deltas with NaN or infinity.")
    return deltas, budgets


def _check_outcomes(success, magnitudes) -> tuple[np.ndarray, np.ndarray]:
    success = np.asarray(success)
    magnitudes = np.asarray(magnitudes, dtype=np.float64)
    if success.ndim != 1 or not success.size or success.shape != magnitudes.shape:
        raise AdvfaceError(
            "`success` and `magnitudes` must be non-empty 1-D arrays of the same length, one per identity. "
            f"Received: success.shape={success.shape}, magnitudes.shape={magnitudes.shape}."
        )
    if success.dtype != np.bool_:
        raise AdvfaceError(f"`success` must be boolean. Received: success.dtype={success.dtype}.")
    hits = magnitudes[success]
    if not np.all(np.isfinite(hits)) or np.any(hits < 0):
        raise AdvfaceError(
            "Successful attacks need finite, non-negative magnitudes. Received: "
            f"magnitudes of successes from {hits.min()} to {hits.max()}."
        )
    return success, magnitudes


def _p(test, *args, **kwargs) -> float:
    """A scipy test's p-value; NaN (everything tied) becomes 1: no evidence of a difference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(test(*args, **kwargs).pvalue)
    return 1.0 if math.isnan(p) else p


def _consecutive(order, column) -> tuple[float, ...]:
    return tuple(_p(stats.wilcoxon, column[a], column[b], alternative="greater") for a, b in pairwise(order))


def _figure(size):
    from matplotlib.figure import Figure

    # A bare Figure renders with Agg on savefig and leaves pyplot's global backend alone (the GUI's).
    return Figure(figsize=size)


def _save(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
