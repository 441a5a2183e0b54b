"""The face recognition page, wired to the real worker, the real dlib model and real sample photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QObject, Signal  # noqa: E402

from advface.alignment import FaceAligner  # noqa: E402
from advface.gui.pages.recognition import RecognitionPage  # noqa: E402
from advface.gui.worker import Worker  # noqa: E402
from advface.images import load_image, save_image  # noqa: E402
from advface.zoo import load_model  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 180_000


class SyncWorker(QObject):
    """A stand-in with the worker's signals that runs the job in the calling thread."""

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    busy = Signal(bool)

    is_busy = False
    owner = ""

    def start(self, fn, owner: str = "", **kwargs) -> bool:
        self.busy.emit(True)
        try:
            result = fn(progress=self.progress.emit, **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the page like the real worker does
            self.busy.emit(False)
            self.failed.emit(str(exc), repr(exc))
        else:
            self.busy.emit(False)
            self.finished.emit(result)
        return True

    def stop(self) -> None:
        pass


@pytest.fixture
def page(qtbot, settings):
    worker = Worker()
    page = RecognitionPage(worker, settings)
    qtbot.addWidget(page)
    page.resize(1000, 900)
    page.show()
    yield page
    worker.shutdown()


def _run(qtbot, page, started: bool) -> None:
    """Wait for the page's job to end (the worker delivers its result in the GUI thread)."""
    assert started, page.message.text()
    qtbot.waitUntil(lambda: page.job is None, timeout=TIMEOUT_MS)


def _open(qtbot, page, slot, path) -> None:
    _run(qtbot, page, page.open_image(slot, path))


def _api_distance(a: Path, b: Path) -> float:
    model, aligner = load_model("dlib-resnet"), FaceAligner()
    chips = np.stack([aligner.align_one(load_image(p), model.template).chip for p in (a, b)])
    embeddings = model.embed(chips)
    return float(model.distance(embeddings[:1], embeddings[1:])[0])


@pytest.mark.slow
def test_verify_same_person_matches_api(qtbot, page, samples):
    assert page.title == "Face recognition"
    assert page.model_name == "dlib-resnet"
    _open(qtbot, page, "A", samples / "obama.jpg")
    _open(qtbot, page, "B", samples / "obama2.jpg")
    assert page.views["A"].faces and page.views["B"].faces
    assert page.slots["A"].chip.pixmap() is not None and not page.slots["A"].chip.pixmap().isNull()
    _run(qtbot, page, page.verify())
    result = page.last_result
    assert page.verdict.text().startswith("same person: ")
    assert result.distance == pytest.approx(
        _api_distance(samples / "obama.jpg", samples / "obama2.jpg"), abs=1e-4
    )
    assert f"{result.distance:.3f} <= 0.6" in page.verdict.text()
    assert page.gauge.distance == result.distance and page.gauge.threshold == 0.6
    assert page.message.text() == ""


@pytest.mark.slow
def test_verify_different_people(qtbot, page, samples):
    _open(qtbot, page, "A", samples / "obama.jpg")
    _open(qtbot, page, "B", samples / "biden.jpg")
    _run(qtbot, page, page.verify())
    assert page.verdict.text().startswith("different people: ")
    assert page.last_result.distance > 0.6
    assert page.last_result.distance == pytest.approx(
        _api_distance(samples / "obama.jpg", samples / "biden.jpg"), abs=1e-4
    )


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["subfolders", "flat"])
def test_identify_top1(qtbot, page, samples, tmp_path, layout):
    gallery = tmp_path / "gallery"
    if layout == "subfolders":
        for name in ("obama", "biden"):
            (gallery / name).mkdir(parents=True)
            shutil.copy(samples / f"{name}.jpg", gallery / name / "1.jpg")
    else:
        gallery.mkdir()
        shutil.copy(samples / "obama.jpg", gallery / "obama1.jpg")
        shutil.copy(samples / "biden.jpg", gallery / "biden.jpg")
    _open(qtbot, page, "A", samples / "obama2.jpg")
    _run(qtbot, page, page.identify(gallery, probe="A", k=5))
    assert page.table.rowCount() == 2
    assert page.table.item(0, 0).text() == "obama"
    assert page.table.item(1, 0).text() == "biden"
    assert page.last_result.identification.label == "obama"
    assert "identified as obama" in page.identity.text()
    assert float(page.table.item(0, 1).text()) < float(page.table.item(1, 1).text())


def test_image_without_face_shows_message(qtbot, page, samples, tmp_path):
    blank = save_image(tmp_path / "wall.png", np.full((200, 200, 3), 0.5, np.float32))
    _open(qtbot, page, "A", blank)
    assert "No face found in image A" in page.message.text()
    assert page.views["A"].faces == ()
    _open(qtbot, page, "B", samples / "obama.jpg")
    _run(qtbot, page, page.verify())
    assert "No face found in image A (wall.png)" in page.message.text()
    assert page.verdict.text() == "Open two photos and press Verify."


def test_unreadable_image_shows_message(qtbot, page, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    _open(qtbot, page, "A", broken)
    assert "Cannot read image" in page.message.text()
    assert page.paths["A"] is None
    assert not page.verify()
    assert "Open an image in slot A" in page.message.text()


def test_identify_needs_a_gallery(qtbot, page, samples):
    _open(qtbot, page, "A", samples / "obama.jpg")
    assert not page.identify()
    assert "Choose a gallery folder" in page.message.text()


@pytest.mark.slow
def test_works_with_a_synchronous_worker_and_screenshot(qtbot, settings, samples, tmp_path):
    page = RecognitionPage(SyncWorker(), settings)
    qtbot.addWidget(page)
    page.resize(1000, 900)
    page.show()
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    shutil.copy(samples / "obama.jpg", gallery / "obama.jpg")
    shutil.copy(samples / "biden.jpg", gallery / "biden.jpg")
    assert page.open_image("A", samples / "obama.jpg")
    assert page.open_image("B", samples / "obama2.jpg")
    assert page.verify()
    assert page.verdict.text().startswith("same person: ")
    assert page.identify(gallery, probe="B")
    assert page.last_result.probe.path.name == "obama2.jpg"
    assert page.table.item(0, 0).text() == "obama"
    assert page.message.text() == ""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "gui_recognition.png"
    assert page.grab().save(str(path))
    assert path.stat().st_size > 0


class _FakeCamera:
    """A webcam stand-in for ``cv2.VideoCapture``: serves ``frames`` (BGR uint8), then fails like an
    unplugged camera (``grab`` returns False)."""

    def __init__(self, frames):
        self.frames, self.i, self.released = list(frames), -1, False

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def grab(self):
        self.i += 1
        return self.i < len(self.frames)

    def retrieve(self):
        return True, self.frames[self.i]

    def get(self, prop):
        return 0.0

    def release(self):
        self.released = True


@pytest.mark.slow
def test_camera_frame_opens_into_a_slot_and_verifies(qtbot, page, samples, settings, tmp_path, monkeypatch):
    import cv2

    import advface.glasses.camera as camera

    cameras = {}

    def open_camera(source):
        assert source == 1  # the index chosen in the page
        frame = cv2.imread(str(samples / "obama2.jpg"))
        cameras[source] = _FakeCamera([frame])
        return cameras[source]

    monkeypatch.setattr(camera, "_quiet_capture", open_camera)
    settings.setValue("recognition/captures", str(tmp_path / "captures"))
    _run(qtbot, page, page.capture("A", camera=1))
    assert page.message.text() == ""
    saved = page.paths["A"]
    assert saved.parent == tmp_path / "captures" and saved.name.startswith("camera1-A-")
    assert len(page.views["A"].faces) == 1 and cameras[1].released
    # The captured frame is verified like a photo: the same person as obama.jpg.
    _open(qtbot, page, "B", samples / "obama.jpg")
    _run(qtbot, page, page.verify())
    assert page.last_result.same
    assert page.last_result.distance == pytest.approx(_api_distance(saved, samples / "obama.jpg"), abs=1e-4)
    assert int(settings.value("recognition/camera")) == 1


def test_missing_or_unplugged_camera_shows_a_message(qtbot, page, samples, settings, tmp_path, monkeypatch):
    import advface.glasses.camera as camera

    class Closed(_FakeCamera):
        def isOpened(self):  # noqa: N802 - OpenCV's name
            return False

    _open(qtbot, page, "A", samples / "obama.jpg")
    monkeypatch.setattr(camera, "_quiet_capture", lambda source: Closed([]))
    _run(qtbot, page, page.capture("A", camera=3))
    assert "Could not open camera 3" in page.message.text()
    assert page.paths["A"] == samples / "obama.jpg" and page.views["A"] is not None  # the photo is kept
    monkeypatch.setattr(camera, "_quiet_capture", lambda source: _FakeCamera([]))  # opens, gives nothing
    _run(qtbot, page, page.capture("B", camera=0))
    assert "Camera 0" in page.message.text() and "gave no frame" in page.message.text()
    assert page.paths["B"] is None
    assert page.camera_spin.isEnabled() and page.slots["B"].camera_button.isEnabled()
