"""Evaluation of semantic attacks: contributions, attribute ranking, results.txt, curves and figures."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from advface.errors import AdvfaceError, ImageError
from advface.semantic import evaluate as ev
from advface.semantic.evaluate import AttackSummary, Ranking

NAMES = ("age", "eyeglasses", "gender", "pose", "smile", "hair", "beard")


def _planted(order, budgets, n=200, seed=0):
    """Deltas whose attributes dominate in ``order``: each carries twice the M-scaled spread of the next."""
    rng = np.random.default_rng(seed)
    spread = np.empty(len(budgets))
    spread[list(order)] = 2.0 ** -np.arange(len(order))
    return rng.normal(size=(n, len(budgets))) * spread * budgets


def _contributions(deltas, budgets):
    """The formula, written out independently of the module."""
    parts = (deltas / budgets) ** 2
    return parts / parts.sum(axis=1, keepdims=True)


def test_contributions_sum_to_one_and_weigh_by_budget():
    deltas = np.array([[0.3, 0.3, 0.0], [0.1, -0.2, 0.4], [1.0, 0.0, 0.0]])
    c = ev.contributions(deltas, [0.5, 1.0, 0.2])
    np.testing.assert_allclose(c.sum(axis=1), 1.0)
    np.testing.assert_allclose(c, _contributions(deltas, np.array([0.5, 1.0, 0.2])))
    # The same coefficient on an attribute with twice the budget contributes a quarter as much.
    assert c[0, 1] / c[0, 0] == pytest.approx(0.25)
    np.testing.assert_allclose(c[2], [1.0, 0.0, 0.0])


def test_zero_perturbations_are_uniform_and_change_no_ranking():
    budgets = np.array([0.5, 0.5, 0.2, 0.5, 0.8])
    deltas = _planted([2, 0, 1, 3, 4], budgets)
    np.testing.assert_allclose(ev.contributions(np.zeros((2, 5)), budgets), 0.2)
    with_zeros = np.concatenate([deltas, np.zeros((30, 5))])
    plain = ev.rank_attributes(deltas, budgets, NAMES[:5])
    padded = ev.rank_attributes(with_zeros, budgets, NAMES[:5])
    assert padded.order == plain.order
    np.testing.assert_allclose(padded.friedman, plain.friedman, rtol=1e-12)
    np.testing.assert_allclose(padded.p_values, plain.p_values, rtol=1e-12)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_rank_attributes_recovers_a_planted_order(k):
    budgets = np.linspace(0.2, 0.8, k)
    planted = list(np.random.default_rng(k).permutation(k))
    deltas = _planted(planted, budgets, seed=k)
    ranking = ev.rank_attributes(deltas, budgets, NAMES[:k])
    assert ranking.found and ranking.unranked == ()
    assert ranking.order == tuple(NAMES[i] for i in planted)
    assert len(ranking.friedman) == k - 2 and max(ranking.friedman, default=0) < 1e-6
    # The p-values are scipy's one-sided Wilcoxon between consecutive attributes of the order.
    c = _contributions(deltas, budgets)
    expected = [stats.wilcoxon(c[:, a], c[:, b], alternative="greater").pvalue for a, b in pairwise(planted)]
    np.testing.assert_allclose(ranking.p_values, expected, rtol=1e-12)
    assert max(ranking.p_values) < 1e-3


@pytest.mark.parametrize("k", [3, 5, 7])
def test_rank_attributes_finds_nothing_in_symmetric_noise(k):
    budgets = np.linspace(0.2, 0.8, k)
    deltas = np.random.default_rng(10 + k).normal(size=(200, k)) * budgets
    ranking = ev.rank_attributes(deltas, budgets, NAMES[:k])
    assert not ranking.found
    assert ranking.order == () and ranking.unranked == NAMES[:k] and ranking.p_values == ()
    assert len(ranking.friedman) == 1 and ranking.friedman[0] >= 0.05
    assert ranking.text() == "importance-order:NoneFound\norder-pvals:Undefined"


def test_rank_attributes_stops_where_the_friedman_gate_fails():
    budgets = np.full(5, 0.5)
    rng = np.random.default_rng(3)
    spread = np.array([1.0, 1.0, 4.0, 1.0, 2.0])  # gender, then smile, then three alike
    deltas = rng.normal(size=(300, 5)) * spread * budgets
    ranking = ev.rank_attributes(deltas, budgets, NAMES[:5])
    assert not ranking.found
    assert ranking.order == ("gender", "smile") and ranking.unranked == ("age", "eyeglasses", "pose")
    assert ranking.friedman[0] < 0.05 and ranking.friedman[1] < 0.05 and ranking.friedman[2] >= 0.05
    assert len(ranking.p_values) == 1
    assert ranking.text().splitlines()[0] == "importance-order:gender>smile>age=eyeglasses=pose"


def test_the_last_two_keep_their_order_unless_wilcoxon_separates_them():
    rng = np.random.default_rng(4)
    alike = rng.normal(size=(100, 2))
    tied = ev.rank_attributes(alike, [1.0, 1.0], ("first", "second"))
    assert tied.found and tied.order == ("first", "second") and tied.friedman == ()
    assert stats.wilcoxon(alike[:, 0] ** 2, alike[:, 1] ** 2).pvalue > 0.05
    apart = ev.rank_attributes(alike * [0.3, 1.0], [1.0, 1.0], ("first", "second"))
    assert apart.order == ("second", "first") and apart.p_values[0] < 1e-6


def test_ranking_text_is_the_sources():
    ranking = Ranking(
        ("gender", "age", "eyeglasses", "pose", "smile"), (), (3.87e-25, 2.26e-2, 3.74e-2, 1.48e-9), (), True
    )
    assert ranking.text() == (
        "importance-order:gender>age>eyeglasses>pose>smile\norder-pvals:3.87E-25,2.26E-02,3.74E-02,1.48E-09"
    )


def test_rank_attributes_explains_bad_input():
    deltas = np.ones((10, 3))
    with pytest.raises(AdvfaceError, match=r"Received: names=\['a', 'b'\]"):
        ev.rank_attributes(deltas, [1, 1, 1], ["a", "b"])
    with pytest.raises(AdvfaceError, match="Received: budgets="):
        ev.rank_attributes(deltas, [1, 0, 1], ["a", "b", "c"])
    with pytest.raises(AdvfaceError, match=r"Received: deltas.shape=\(10,\)"):
        ev.contributions(np.ones(10), [1.0])
    assert ev.rank_attributes(deltas[:1], [1, 1, 1], "abc").text().startswith("importance-order:NoneFound")


def test_summary_text_is_the_sources():
    success = np.arange(200) < 6
    magnitudes = np.where(success, 1.0, 0.3)  # failures' magnitudes are ignored
    summary = ev.summarise(success, magnitudes)
    assert summary == AttackSummary(successes=6, instances=200, rate=0.03, avg_mag=1.0)
    assert summary.text() == "successes:6\ninstances:200\nrate:3.00\navg_mag:1.00"
    everything = ev.summarise(np.ones(200, bool), np.linspace(9.32, 10.32, 200))
    assert everything.text().splitlines()[2:] == ["rate:100.00", "avg_mag:9.82"]
    nothing = ev.summarise(np.zeros(4, bool), np.full(4, np.nan))
    assert math.isnan(nothing.avg_mag) and nothing.text().endswith("rate:0.00\navg_mag:nan")
    with pytest.raises(AdvfaceError, match="Received: success.shape=.4,., magnitudes.shape=.3,."):
        ev.summarise(np.zeros(4, bool), np.zeros(3))


def test_write_results_parses_like_the_sources_eval_files(tmp_path):
    summary = ev.summarise(np.array([True, False, True, True]), np.array([0.5, 9.0, 1.0, 1.5]))
    ranking = Ranking(("smile", "age"), ("pose",), (0.0123,), (1e-5, 0.2), False)
    path = ev.write_results(tmp_path / "pgd", summary, ranking)
    lines = path.read_text().splitlines()
    assert lines[4] == ""
    data = {line.split(":")[0]: line.split(":")[1] for line in lines if line}
    assert data == {
        "successes": "3",
        "instances": "4",
        "rate": "75.00",
        "avg_mag": "1.00",
        "importance-order": "smile>age>pose",
        "order-pvals": "1.23E-02",
    }
    empty = ev.write_results(tmp_path, ev.summarise(np.zeros(2, bool), np.zeros(2)), None).read_text()
    assert empty.endswith("\n\nimportance-order:NoneFound\norder-pvals:Undefined\n")


def test_accuracy_vs_perturbation():
    rng = np.random.default_rng(5)
    success = rng.random(300) < 0.6
    magnitudes = np.where(success, rng.exponential(0.5, 300), np.inf)
    magnitudes[:5], success[:5] = 0.0, True  # clean faces already misidentified
    rate = success.mean()
    radii = np.linspace(0, magnitudes[success].max(), 50)
    radii, accuracy = ev.accuracy_vs_perturbation(success, magnitudes, radii)
    assert np.all(np.diff(accuracy) <= 0)
    assert accuracy[0] == pytest.approx(1 - 5 / 300) and accuracy[-1] == pytest.approx(1 - rate)
    # Default radii, as the source: up to the 99th percentile of the successful magnitudes.
    radii, accuracy = ev.accuracy_vs_perturbation(success, magnitudes)
    assert radii[0] == 0 and radii[-1] == pytest.approx(np.percentile(magnitudes[success], 99))
    assert 1 - rate < accuracy[-1] <= 1 - rate + 0.02
    ones = ev.accuracy_vs_perturbation(np.zeros(3, bool), np.zeros(3))[1]
    np.testing.assert_array_equal(ones, 1.0)


def test_figures_are_pngs(tmp_path):
    faces = [np.zeros((64, 48, 3), np.float32) for _ in range(3)]
    for face, channel in zip(faces, range(3), strict=True):
        face[..., channel] = 1.0  # red, green, blue
    path = ev.success_figure(tmp_path / "figs" / "ori_3_adv_7.png", *faces, magnitude=0.8731)
    with Image.open(path) as image:
        assert image.format == "PNG" and 600 < image.width < 1400 and 200 < image.height < 600
        pixels = np.asarray(image.convert("RGB")).astype(int)
    thirds = np.array_split(pixels, 3, axis=1)
    for third, channel in zip(thirds, range(3), strict=True):
        pure = (third[..., channel] > 240) & (np.delete(third, channel, axis=-1).max(axis=-1) < 15)
        assert pure.sum() > 1000, f"face {channel} missing from its third of the figure"
    curves = {
        "pgd": ev.accuracy_vs_perturbation(np.arange(10) < 4, np.linspace(0.1, 1, 10)),
        "fab": ev.accuracy_vs_perturbation(np.ones(10, bool), np.linspace(0.5, 9, 10)),
    }
    plot = ev.plot_accuracy_vs_perturbation(tmp_path / "acc_vs_pert.png", curves)
    with Image.open(plot) as image:
        assert image.format == "PNG" and 400 < image.width < 800 and 300 < image.height < 600
        assert np.asarray(image.convert("L")).std() > 10
    with pytest.raises(ImageError, match="Received: dtype=uint8"):
        ev.success_figure(tmp_path / "x.png", *(np.zeros((8, 8, 3), np.uint8),) * 3, magnitude=1.0)
