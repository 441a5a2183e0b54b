"""The eyeglasses page, wired to the real worker, the shipped eyeglass generator and a real sample photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


from advface.alignment import FaceAligner  # noqa: E402
from advface.glasses.dcgan import generate, load_generator, sample_latents  # noqa: E402
from advface.glasses.geometry import GlassesRenderer, Placement  # noqa: E402
from advface.gui.pages.eyeglasses import FRAMES, SLIDERS, EyeglassesPage  # noqa: E402
from advface.gui.worker import Worker  # noqa: E402
from advface.images import load_image  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 180_000


@pytest.fixture
def page(qtbot, settings):
    worker = Worker()
    page = EyeglassesPage(worker, settings)
    qtbot.addWidget(page)
    page.resize(1000, 1000)
    page.show()  # the first show samples frames from the spin box's seed
    qtbot.waitUntil(lambda: page.job is None and page.frames is not None, timeout=TIMEOUT_MS)
    yield page
    worker.shutdown()


def _run(qtbot, page, started: bool) -> None:
    assert started, page.message.text()
    qtbot.waitUntil(lambda: page.job is None, timeout=TIMEOUT_MS)


def test_samples_reroll_and_reproduce(qtbot, page):
    assert page.title == "Eyeglasses"
    assert page.message.text() == ""
    first = page.frames.copy()
    assert first.shape == (FRAMES, 64, 176, 3) and first.dtype == np.float32
    assert first.std() > 0.01 and 0 <= first.min() and first.max() <= 1
    np.testing.assert_allclose(first, generate(load_generator(), sample_latents(FRAMES, 0)), atol=1e-6)
    for button in page.buttons:
        assert not button.icon().isNull()
    assert page.preview.pixmap() is not None and not page.preview.pixmap().isNull()

    _run(qtbot, page, page.reroll(7))
    assert page.seed == 7 and page.job is None  # sampled in the GUI thread once loaded
    assert np.abs(page.frames - first).max() > 0.1
    np.testing.assert_array_equal(page.latents, sample_latents(FRAMES, 7))
    _run(qtbot, page, page.reroll(0))
    np.testing.assert_array_equal(page.frames, first)


def test_slider_rerenders_selected_frame(qtbot, page):
    page.buttons[3].click()
    assert page.selected == 3
    assert all(s.isEnabled() for s in page.sliders) and len(page.sliders) == SLIDERS
    z = page.latents[3].copy()
    assert page.sliders[0].value() == round(z[0] * 100)
    before, others = page.frames[3].copy(), np.delete(page.frames, 3, axis=0).copy()
    icon_before = page.buttons[3].icon().pixmap(176, 64).toImage()
    page.sliders[0].setValue(-100 if z[0] > 0 else 100)
    assert page.latents[3, 0] == (-1.0 if z[0] > 0 else 1.0)
    np.testing.assert_array_equal(page.latents[3, 1:], z[1:])
    assert np.abs(page.frames[3] - before).max() > 0.05
    np.testing.assert_allclose(page.frames[3], generate(page.generator, page.latents[3:4])[0], atol=1e-6)
    np.testing.assert_array_equal(np.delete(page.frames, 3, axis=0), others)
    assert page.buttons[3].icon().pixmap(176, 64).toImage() != icon_before


def test_try_on_obama_matches_api(qtbot, page, samples):
    page.select(2)
    _run(qtbot, page, page.open_image(samples / "obama.jpg"))
    assert page.message.text() == ""
    chip = FaceAligner().align_one(load_image(samples / "obama.jpg"), "dlib").chip
    np.testing.assert_array_equal(page.fitted.chip, chip)
    renderer = GlassesRenderer(Placement.digital("dlib", 1))
    frame = page.frames[2]
    expected = np.asarray(renderer(frame[None], chip[None], np.array([0])))[0]
    assert page.worn.shape == chip.shape == (150, 150, 3)
    np.testing.assert_allclose(page.worn, expected, atol=1e-6)
    # The frame changes the chip exactly where the warped frame mask covers it.
    _, alpha = renderer.warp(frame[None], np.array([0]))
    alpha = np.asarray(alpha)[0, ..., 0]
    changed = np.abs(page.worn - chip).max(axis=-1) > 1e-6
    assert changed.any()
    assert not (changed & (alpha == 0)).any()  # nothing outside the eyeglass region
    assert changed[alpha > 0.5].mean() > 0.95  # (almost) everything inside it
    assert 0.02 < (alpha > 0.5).mean() < 0.15
    assert not page.bare.pixmap().isNull() and not page.worn_label.pixmap().isNull()

    # The try-on follows the selection and the sliders.
    worn_2 = page.worn.copy()
    page.select(5)
    assert np.abs(page.worn - worn_2).max() > 0.05
    page.sliders[1].setValue(0 if page.sliders[1].value() != 0 else 50)
    np.testing.assert_allclose(
        page.worn, np.asarray(renderer(page.frames[5][None], chip[None], np.array([0])))[0], atol=1e-6
    )

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "gui_eyeglasses.png"
    assert page.grab().save(str(path))
    assert path.stat().st_size > 0


def test_unreadable_photo_and_no_face_show_message(qtbot, page, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    _run(qtbot, page, page.open_image(broken))
    assert "Cannot read image" in page.message.text()
    assert page.fitted is None
    from advface.images import save_image

    blank = save_image(tmp_path / "wall.png", np.full((200, 200, 3), 0.5, np.float32))
    _run(qtbot, page, page.open_image(blank))
    assert page.message.text() != "" and page.fitted is None
