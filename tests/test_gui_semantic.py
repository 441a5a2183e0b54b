"""The semantic robustness page, wired to the real worker, the digiface-dcgan generator and dlib-resnet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from gui_ticks import TimerTicks  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from advface.chunks import load_chunks  # noqa: E402
from advface.gui.pages.semantic import (  # noqa: E402
    SLIDER_STEPS,
    AttackOutcome,
    CertifyOutcome,
    Gallery,
    GalleryOutcome,
    SemanticPage,
)
from advface.gui.worker import Worker  # noqa: E402
from advface.semantic.evaluate import rank_attributes  # noqa: E402
from advface.semantic.workflow import ranking_text  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_S = 300
IDENTITIES = 10


def _idle(page) -> bool:
    """No job of any kind running or about to start (edits are debounced and queued)."""
    return page.is_idle()


def _wait(condition, timeout: float = TIMEOUT_S) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < deadline, "timed out"
        QApplication.processEvents()
        time.sleep(0.002)


@pytest.fixture(scope="module")
def steps_seen():
    return []


@pytest.fixture(scope="module")
def page(qapp, tmp_path_factory, steps_seen):
    """One page with a generated gallery of ``IDENTITIES`` identities for the whole module."""
    folder = tmp_path_factory.mktemp("gui-semantic")
    settings = QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("semantic/runs", str(folder / "runs"))
    worker = Worker()
    page = SemanticPage(worker, settings)
    page.resize(1150, 1250)
    page.show()
    worker.progress.connect(lambda p: steps_seen.append((p.stage, p.step, p.total)))
    start = time.perf_counter()
    assert page.generate(n=IDENTITIES, seed=0), page.message.text()
    _wait(lambda: page.gallery is not None and _idle(page) and page.last_edit is not None)
    print(
        f"\ngallery of {IDENTITIES} generated and shown in {time.perf_counter() - start:.1f} s; first edit "
        f"(traces the graph) rendered and embedded in {page.last_edit.seconds * 1000:.0f} ms"
    )
    yield page
    worker.shutdown()
    page.close()


def _run(page, start) -> None:
    assert start(), page.message.text()
    _wait(lambda: _idle(page))


def test_runs_need_a_gallery(qtbot, settings):
    worker = Worker()
    fresh = SemanticPage(worker, settings)
    qtbot.addWidget(fresh)
    assert fresh.title == "Semantic robustness"
    assert fresh.generator_name == "digiface-dcgan" and fresh.model_name == "dlib-resnet"
    assert fresh.attributes == ("yaw", "pitch", "smile", "mouth", "eyes")
    assert not fresh.run_pgd()
    assert "Generate identities first" in fresh.message.text()
    assert not fresh.pgd_button.isEnabled() and not worker.is_busy


@pytest.mark.slow
def test_generating_shows_the_gallery_and_the_clean_edit(page, steps_seen):
    gallery = page.gallery
    assert isinstance(gallery, Gallery)
    assert len(gallery.identities) == IDENTITIES and page.thumbs.count() == IDENTITIES
    assert gallery.run.parent == Path(page.settings.value("semantic/runs"))
    assert gallery.run.name.startswith("semantic-") and (gallery.run / "config.json").is_file()
    assert [s for s in steps_seen if s[0] == "identities"], "no progress from the generation"
    edit = page.last_edit
    assert edit.position == 0 and edit.still_matches
    assert edit.own_distance < 1e-3  # the clean render is the gallery's own embedding
    assert not page.original_view.image.pixmap().isNull()
    page.select(3)
    _wait(lambda: _idle(page) and page.last_edit.position == 3)
    assert page.thumbs.currentRow() == 3 and page.index_spin.value() == 3


@pytest.mark.slow
def test_sliders_edit_the_face_within_the_budget(page):
    page.select(1)
    _wait(lambda: _idle(page) and page.last_edit.position == 1)
    clean = page.last_edit
    yaw, _ = page.sliders["yaw"]
    count = page.edit_count
    yaw.setValue(SLIDER_STEPS)  # the limit: +m_yaw
    _wait(lambda: _idle(page) and page.edit_count > count)
    edited = page.last_edit
    assert page.delta["yaw"] == pytest.approx(page.budgets["yaw"])
    assert page.m_norm == pytest.approx(1.0) and page.m_norm <= 1 + 1e-9
    assert edited.delta[page.gallery.directions.index("yaw")] == pytest.approx(page.budgets["yaw"], rel=1e-6)
    assert np.abs(edited.image - clean.image).max() > 0.05
    assert edited.own_distance > clean.own_distance + 1e-3
    assert f"{edited.own_distance:.4f}" in page.edit_info.text()
    assert f"nearest other identity {edited.nearest}" in page.edit_info.text()
    # A second slider at its limit stops at the ellipsoid's surface: the offset stays within the budget.
    smile, _ = page.sliders["smile"]
    count = page.edit_count
    smile.setValue(-SLIDER_STEPS)
    assert page.m_norm <= 1 + 1e-9
    assert -SLIDER_STEPS < smile.value() <= 0 and page.delta["smile"] >= -page.budgets["smile"]
    _wait(lambda: _idle(page) and page.edit_count > count)
    assert np.allclose(page.last_edit.delta, page.full_delta())
    assert "M-norm of the offset" in page.edit_info.text()
    # Rendering + embedding one face, now compiled (measured in the job).
    times = []
    for value in (-SLIDER_STEPS, SLIDER_STEPS // 2, 0):
        before = page.edit_count
        yaw.setValue(value)
        _wait(lambda before=before: _idle(page) and page.edit_count > before)
        times.append(page.last_edit.seconds * 1000)
    print(f"\nrender + embed one face: {', '.join(f'{t:.0f}' for t in times)} ms")
    page.reset_offsets()
    _wait(lambda: _idle(page))
    assert page.m_norm == 0 and page.last_edit.still_matches


@pytest.mark.slow
def test_pgd_and_fab_on_one_identity(page, steps_seen):
    page.select(2)
    _wait(lambda: _idle(page))
    for attack, start in (
        ("pgd", lambda: page.run_pgd(steps=5, restarts=1, scope="selected identity")),
        ("fab", lambda: page.run_fab(steps=5, restarts=1, targets=2, scope="selected identity")),
    ):
        steps_seen.clear()
        t0 = time.perf_counter()
        _run(page, start)
        outcome = page.last_attack
        assert isinstance(outcome, AttackOutcome) and outcome.attack == attack, page.message.text()
        assert outcome.position == 2 and page.message.text() == ""
        assert [s for s in steps_seen if s[0].startswith("latent")], f"no progress from {attack}"
        text = page.result_text.text()
        assert "on identity 2: " in text
        assert f"{outcome.magnitude:.4f}" in page.adv_view.caption.text()
        if outcome.success:
            assert f"now identified as identity {outcome.matched}" in text and outcome.matched != 2
        else:
            assert "still identified as itself" in text
        if attack == "pgd":
            assert outcome.magnitude <= 1 + 1e-5
        for view in (page.clean_view, page.adv_view, page.matched_view):
            assert not view.image.pixmap().isNull()
        print(f"\n{attack}: success {outcome.success}, magnitude {outcome.magnitude:.3f}, "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    assert page.last_attack.success  # FAB is unbounded: it finds the nearest other identity


@pytest.mark.slow
def test_certification_shows_the_results_radius(page):
    page.select(0)
    _wait(lambda: _idle(page))
    _run(page, lambda: page.certify(sigma=0.5, n0=10, n=100, scope="selected identity"))
    outcome = page.last_certificate
    assert isinstance(outcome, CertifyOutcome), page.message.text()
    assert outcome.radius == (outcome.certificate.radius_m or 0.0)
    assert f"certified radius {outcome.radius:.4f}" in page.result_text.text()
    print(f"\ncertified radius {outcome.radius:.4f} in {outcome.certificate.seconds:.1f} s")
    # Over every identity: the workflow's chunk file and evaluate's summary.
    _run(page, lambda: page.certify(sigma=0.5, n0=10, n=50, scope="all identities"))
    run = page.last_gallery_run
    assert isinstance(run, GalleryOutcome) and run.kind == "certify", page.message.text()
    assert run.summary["instances"] == IDENTITIES
    assert f"Certification of {IDENTITIES} identities: {run.summary['certified']} certified" in (
        page.result_text.text()
    )
    assert (run.run / "certify" / run.name / "chunk-00000-of-00001.tsv").is_file()
    assert (run.run / "certify" / run.name / "certified_accuracy.png").stat().st_size > 5000


@pytest.mark.slow
def test_ranking_over_all_identities_shows_p_values(page):
    t0 = time.perf_counter()
    _run(page, lambda: page.run_fab(steps=3, restarts=1, targets=2, scope="all identities"))
    outcome = page.last_gallery_run
    assert isinstance(outcome, GalleryOutcome), page.message.text()
    assert outcome.summary["instances"] == IDENTITIES
    text = page.result_text.text()
    assert f"over {IDENTITIES} identities" in text
    assert f"Attribute importance: {ranking_text(outcome.summary)}" in text
    friedman = outcome.summary["friedman"]
    assert friedman, "FAB fooled fewer than two identities: no ranking"
    assert "p-values: " in text and "Friedman p-values: " in text
    assert f"{friedman[0]:.3g}" in text
    # The shown tests are rank_attributes' on the run's successful deltas, recomputed here from its chunks.
    folder = outcome.run / "attacks" / outcome.name
    config = json.loads((folder / "config.json").read_text())["arguments"]
    chunks = load_chunks(folder)
    success = np.concatenate([np.atleast_1d(c["success"]) for c in chunks])
    deltas = np.concatenate([c["deltas"] for c in chunks])[success]
    names = config["attributes"]
    ranking = rank_attributes(deltas, [config["budgets"][a] for a in names], names)
    assert list(ranking.friedman) == pytest.approx(friedman)
    assert list(ranking.p_values) == pytest.approx(outcome.summary["p_values"])
    for p in outcome.summary["p_values"]:
        assert f"{p:.3g}" in text
    assert (outcome.run / "attacks" / outcome.name / "results.txt").is_file()
    print(f"\nranking over {IDENTITIES}: {text} ({time.perf_counter() - t0:.1f} s)")
    yaw, _ = page.sliders["yaw"]
    count = page.edit_count
    yaw.setValue(-SLIDER_STEPS)  # an edited face in the screenshot
    _wait(lambda: _idle(page) and page.edit_count > count)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "gui_semantic.png"
    assert page.grab().save(str(path))
    assert path.stat().st_size > 0


@pytest.mark.slow
def test_stop_ends_a_long_attack_early(page, steps_seen):
    steps_seen.clear()
    previous = page.last_attack
    assert page.run_pgd(steps=500, restarts=1, scope="selected identity")
    assert page.stop_button.isEnabled()
    _wait(lambda: len([s for s in steps_seen if s[0].startswith("latent")]) >= 3)
    page.stop_button.click()
    _wait(lambda: _idle(page))
    assert "Stopped" in page.message.text()
    assert page.last_attack is previous
    assert max(s[1] for s in steps_seen) < 500
    assert page.pgd_button.isEnabled() and not page.stop_button.isEnabled()


@pytest.mark.slow
def test_gui_keeps_ticking_during_an_attack(page):
    """A 10 ms timer never waits 100 ms while PGD runs, the first run on new attributes tracing its step."""
    page.set_attributes(("yaw", "pitch", "mouth"))
    _wait(lambda: _idle(page))
    with TimerTicks() as ticks:
        for run in ("first", "second"):
            with ticks.run(run):
                _run(page, lambda: page.run_pgd(steps=20, restarts=1, scope="selected identity"))
    print(ticks.report())
    for run in ("first", "second"):
        assert ticks.count(run) > 10 and ticks.max_gap(run) < 0.1
