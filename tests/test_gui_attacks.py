"""The pixel attacks page, wired to the real worker, the real dlib model and a real sample photo."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


from advface.gui.pages.attacks import AttackPage, AttackRun  # noqa: E402
from advface.gui.worker import Worker  # noqa: E402
from advface.images import save_image  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 300_000


@pytest.fixture
def page(qtbot, settings):
    worker = Worker()
    page = AttackPage(worker, settings)
    qtbot.addWidget(page)
    page.resize(1000, 800)
    page.show()
    yield page
    worker.shutdown()


def _wait(qtbot, page) -> None:
    qtbot.waitUntil(page.is_idle, timeout=TIMEOUT_MS)


@pytest.mark.slow
def test_pgd_dodges_and_shows_the_result(qtbot, page, samples):
    assert page.title == "Pixel attacks"
    assert page.model_name == "dlib-resnet"
    assert page.open_image(samples / "obama.jpg")
    assert page.run_attack(attack="pgd", epsilon="4/255", steps=10), page.message.text()
    _wait(qtbot, page)
    assert page.message.text() == ""
    run = page.last_run
    assert isinstance(run, AttackRun)
    result = run.result
    assert bool(result.success[0])
    assert "pgd" in page.verdict.text().lower() or "PGD" in page.verdict.text()
    assert ": success;" in page.verdict.text()
    assert f"-> {float(result.scores[0]):.4f}" in page.verdict.text()
    assert f"distance {float(result.scores[0]):.4f}" in page.adv_view.caption.text()
    assert f"distance {float(result.clean_scores[0]):.4f}" in page.clean_view.caption.text()
    assert "threshold 0.6" in page.verdict.text()
    rounded = "success" if result.success_8bit[0] else "failed"
    assert f"after 8-bit rounding: {rounded}" in page.verdict.text()
    assert float(result.linf[0]) <= 4 / 255 + 1e-6
    for view in (page.clean_view, page.adv_view, page.delta_view):
        assert not view.image.pixmap().isNull()
    assert run.perturbation.min() >= 0 and run.perturbation.max() <= 1
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "gui_attacks.png"
    assert page.grab().save(str(path))
    assert path.stat().st_size > 0


@pytest.mark.slow
def test_stop_ends_a_long_attack_early(qtbot, page, samples):
    assert page.open_image(samples / "obama.jpg")
    steps = []
    page.worker.progress.connect(lambda p: steps.append(p.step))
    start = time.perf_counter()
    assert page.run_attack(attack="pgd", epsilon="4/255", steps=300)
    assert page.stop_button.isEnabled()
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=TIMEOUT_MS)
    page.stop_button.click()
    _wait(qtbot, page)
    assert "Stopped" in page.message.text()
    assert page.last_run is None
    assert max(steps) < 300
    assert page.run_button.isEnabled() and not page.stop_button.isEnabled()
    print(f"stopped after {max(steps)} steps in {time.perf_counter() - start:.1f} s")


def test_bad_epsilon_shows_a_message(qtbot, page, samples):
    assert page.open_image(samples / "obama.jpg")
    assert not page.run_attack(epsilon="four/255")
    assert "fraction like 8/255" in page.message.text()
    assert not page.run_attack(epsilon="2")
    assert "Epsilon must be in (0, 1]" in page.message.text()
    assert not page.worker.is_busy


def test_attack_needs_a_photo(qtbot, page):
    assert not page.run_attack()
    assert "Open a photo first" in page.message.text()


def test_no_face_shows_a_message(qtbot, page, tmp_path):
    blank = save_image(tmp_path / "wall.png", np.full((200, 200, 3), 0.5, np.float32))
    assert page.open_image(blank)
    assert page.run_attack(steps=2)
    _wait(qtbot, page)
    assert "face" in page.message.text().lower()
    assert page.last_run is None
