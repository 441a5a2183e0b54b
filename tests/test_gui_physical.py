"""The physical test page, wired to the real worker, the real dlib model and a real video of sample faces.

The clip (cv2.VideoWriter, MJPG, 5 fps, 640x480) shows obama, obama3, a blank grey frame, biden and obama
wearing the 7 green marks of printed frames (drawn where the frames sit on his face). Dodging obama2.jpg,
the Obama frames stay recognised, the Biden frames are "fooled" (another person is not Obama) and the
grey frames have no face.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from gui_ticks import TimerTicks  # noqa: E402

from advface.attacks.base import Dodge  # noqa: E402
from advface.glasses import camera  # noqa: E402
from advface.glasses.camera import ROW_COLUMNS, CheckRecord, check_stream  # noqa: E402
from advface.glasses.geometry import MARKS, apply_matrix, image_matrix  # noqa: E402
from advface.glasses.physical import draw_marks  # noqa: E402
from advface.gui.pages.physical import PhysicalPage, running_text  # noqa: E402
from advface.gui.worker import Worker  # noqa: E402
from advface.images import load_image  # noqa: E402
from advface.runs import ResultsTable  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 180_000
SIZE = (480, 640)  # (H, W)
FPS = 5.0
SCENES = ("obama", "obama", "obama3", None, None, "biden", "biden")
SCENES += ("marked", "marked", None, "obama3", "obama")
MARKED = 7  # the first frame with the marks drawn


def _letterbox(image: np.ndarray) -> np.ndarray:
    h, w = SIZE
    scale = min(h / image.shape[0], w / image.shape[1])
    nh, nw = round(image.shape[0] * scale), round(image.shape[1] * scale)
    out = np.full((h, w, 3), 0.5, np.float32)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def _write_video(path: Path, frames) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE[::-1])
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(np.round(frame * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _marked(image: np.ndarray, aligner) -> np.ndarray:
    """``image`` with the 7 green marks where printed frames would sit on its face."""
    face = aligner.detect(image)[0]
    expected = apply_matrix(image_matrix(aligner.chip_matrix(face, "vgg")), MARKS)
    return draw_marks(image, expected, radius=4.0)


@pytest.fixture(scope="module")
def frames(samples, aligner):
    """The letterboxed sample frames by name (None: blank grey, "marked": obama with the marks)."""
    grey = np.full((*SIZE, 3), 0.5, np.float32)
    faces = {n: _letterbox(load_image(samples / f"{n}.jpg")) for n in ("obama", "obama3", "biden")}
    return {None: grey, **faces, "marked": _marked(faces["obama"], aligner)}


@pytest.fixture(scope="module")
def clip(tmp_path_factory, frames):
    return _write_video(tmp_path_factory.mktemp("physical") / "clip.avi", [frames[s] for s in SCENES])


@pytest.fixture
def page(qtbot, settings, samples, tmp_path):
    worker = Worker()
    page = PhysicalPage(worker, settings)
    qtbot.addWidget(page)
    page.resize(1100, 800)
    page.show()
    page.runs_edit.setText(str(tmp_path / "runs"))
    page.goal_combo.setCurrentText("dodge")
    page.set_photos([samples / "obama2.jpg"])
    yield page
    worker.shutdown()


def _wait(qtbot, page) -> None:
    qtbot.waitUntil(page.is_idle, timeout=TIMEOUT_MS)


def _rows(folder: Path) -> list[dict]:
    return ResultsTable(folder / "frames.tsv", ROW_COLUMNS).rows()


class FakeCamera:
    """A webcam that gives ``count`` frames and then fails to grab (unplugged). A plain class, not a
    cv2.VideoCapture subclass (those crash the garbage collector)."""

    def __init__(self, frame: np.ndarray, count: int):
        self.bgr = cv2.cvtColor(np.round(frame * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        self.left = count
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return not self.released

    def grab(self) -> bool:
        self.left -= 1
        return self.left >= 0

    def retrieve(self):
        return True, self.bgr.copy()

    def get(self, prop) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


@pytest.mark.slow
def test_check_a_video_shows_each_frame_and_records_the_run(qtbot, page, clip, aligner):
    assert page.title == "Physical test"
    assert page.model_name == "dlib-resnet"
    steps = []
    page.worker.progress.connect(lambda p: steps.append(p) if p.stage == "check" else None)
    page.set_source(video=clip)
    start = time.perf_counter()
    assert page.start_check(), page.message.text()
    assert page.stop_button.isEnabled() and not page.start_button.isEnabled()
    _wait(qtbot, page)
    seconds = time.perf_counter() - start
    assert page.message.text() == ""
    result = page.last_check
    assert isinstance(result, CheckRecord) and result.ended == "finished"
    # 1. One progress report per frame, in order, with the FrameCheck and the running counts.
    assert [p.step for p in steps] == list(range(1, len(SCENES) + 1))
    assert all(p.total == len(SCENES) for p in steps)
    checks = [p.metrics["frame"] for p in steps]
    assert [c.face_found for c in checks] == [s is not None for s in SCENES]
    assert [c.fooled for c in checks] == [s == "biden" for s in SCENES]
    last = steps[-1].metrics
    assert (last["frames"], last["frames_with_face"], last["frames_fooled"]) == (12, 9, 2)
    # 2. The page shows the last frame, its decision and the running fraction.
    shown = page.last_frame
    assert shown is checks[-1]
    caption = page.frame_view.caption.text()
    assert caption.startswith("frame 11 (") and "recognised, distance" in caption
    assert f"distance {shown.score:.3f} <= threshold 0.6" in caption
    assert "fooled on 2 of 9 frames with a face (22%); 12 frames checked" in page.tally.text()
    assert not page.frame_view.image.pixmap().isNull()
    assert all(p.metrics["display"].shape == (*SIZE, 3) for p in steps)
    assert all(c.landmarks is not None and c.landmarks.shape == (5, 2) for c in checks if c.face_found)
    # 3. The marks: found on the marked frames, "none" on the plain ones.
    marks = [p.metrics["marks"] for p in steps]
    assert marks[MARKED] is not None and marks[MARKED].shape == (7, 2)
    assert all(m is None for m, s in zip(marks, SCENES, strict=True) if s != "marked")
    assert page.caption(checks[0], marks[0], 0.6).endswith("marks: none")
    assert page.caption(checks[MARKED], marks[MARKED], 0.6).endswith("marks: 7 found")
    # 4. The run folder: config, one row per frame, and a summary that agrees with the rows.
    folder = page.run_dir
    assert folder is not None and folder.parent == Path(page.runs_edit.text())
    assert folder.name.startswith("physical-") and result.out == folder
    config = json.loads((folder / "config.json").read_text())
    assert config["command"] == "gui physical" and config["arguments"]["goal"] == "dodge"
    rows = _rows(folder)
    assert [int(r["index"]) for r in rows] == list(range(len(SCENES)))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["frames"] == len(rows) == 12
    assert summary["frames_with_face"] == sum(int(r["face_found"]) for r in rows) == 9
    assert summary["frames_fooled"] == sum(int(r["fooled"]) for r in rows) == 2
    assert summary["fooled_fraction"] == pytest.approx(2 / 9)
    assert summary["ended"] == "finished" and summary["model"] == "dlib-resnet" and summary["goal"] == "dodge"
    assert summary["source"] == str(clip)
    # 5. The same decisions as check_stream run directly on the video.
    from advface.zoo import load_model

    model = load_model("dlib-resnet")
    reference = model.embed(aligner.align_one(load_image(page.photos[0]), model.template).chip[None])
    direct = check_stream(clip, model, Dodge(reference), aligner=aligner)
    assert [f.row() for f in direct.frames] == [c.row() for c in checks]
    assert (direct.frames_with_face, direct.frames_fooled) == (9, 2)
    assert [r["score"] for r in rows] == [f"{f.score:.6g}" for f in direct.frames]
    # 6. A screenshot for people to look at.
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "gui_physical.png"
    assert page.grab().save(str(path))
    assert path.stat().st_size > 0
    print(f"\nchecked {len(SCENES)} frames in {seconds:.1f} s (model loading included)")


@pytest.mark.slow
def test_stop_ends_a_long_check_and_keeps_the_rows(qtbot, page, frames, tmp_path):
    video = _write_video(tmp_path / "long.avi", [frames["obama"]] * 100 + [frames[None]] * 100)
    steps = []
    page.worker.progress.connect(lambda p: steps.append(p.step) if p.stage == "check" else None)
    page.set_source(video=video)
    assert page.start_check(), page.message.text()
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=TIMEOUT_MS)
    page.stop_button.click()
    _wait(qtbot, page)
    n = max(steps)
    assert n < 200 and page.last_check is None
    assert page.message.text() == f"Stopped. The {n} frames checked are kept in {page.run_dir}."
    assert "(stopped)" in page.tally.text()
    rows = _rows(page.run_dir)
    assert len(rows) == n
    summary = json.loads((page.run_dir / "summary.json").read_text())
    assert summary["ended"] == "stopped" and summary["frames"] == n == summary["frames_with_face"]
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    print(f"\nstopped after {n} of 200 frames")


@pytest.mark.slow
def test_an_unplugged_camera_gives_a_message_and_a_complete_run(qtbot, page, frames, monkeypatch):
    cameras = []

    def capture(source):
        assert source == 0, source  # opened as camera index 0
        cameras.append(FakeCamera(frames["obama"], count=4))  # 1 grabbed on opening + 3 more, then none
        return cameras[-1]

    monkeypatch.setattr(camera, "_quiet_capture", capture)
    page.set_source(camera=0)
    assert page.start_check(), page.message.text()
    _wait(qtbot, page)
    result = page.last_check
    assert result is not None and result.ended == "camera stopped" and result.kind == "camera"
    assert page.message.text() == (
        f"Camera 0 stopped giving frames (unplugged?). The 4 frames checked are kept in {page.run_dir}. "
        "Plug it in again and press Start (a new run folder)."
    )
    assert cameras[0].released
    assert len(_rows(page.run_dir)) == 4
    summary = json.loads((page.run_dir / "summary.json").read_text())
    assert summary["ended"] == "camera stopped" and summary["source"] == "camera 0"
    assert summary["frames"] == summary["frames_with_face"] == 4 and summary["frames_fooled"] == 0
    assert page.start_button.isEnabled()


def test_a_camera_that_cannot_be_opened_gives_one_line(qtbot, page, frames, monkeypatch):
    monkeypatch.setattr(camera, "_quiet_capture", lambda source: FakeCamera(frames["obama"], count=0))
    page.set_source(camera=7)
    assert page.start_check()
    _wait(qtbot, page)
    text = page.message.text()
    assert text.startswith("Camera 7 opened but gave no frame.") and "\n" not in text
    assert page.last_check is None and not list(Path(page.runs_edit.text()).glob("physical-*"))


def test_a_camera_index_that_does_not_exist_gives_one_line(qtbot, page):
    page.set_source(camera=57)
    assert page.start_check()
    _wait(qtbot, page)
    assert page.message.text().startswith("Could not open camera 57. Received: source=57.")
    assert "\n" not in page.message.text() and page.start_button.isEnabled()


def test_a_missing_video_or_photos_give_a_message(qtbot, page, tmp_path):
    page.set_source(video=tmp_path / "missing.avi")
    assert page.start_check()
    _wait(qtbot, page)
    assert page.message.text().startswith(f"No such video file: {tmp_path / 'missing.avi'}.")
    page.video_edit.setText("")
    assert not page.start_check()
    assert page.message.text() == "Choose a video file first (or a camera)."
    page.set_source(camera=0)
    page.set_photos([])
    assert not page.start_check()
    assert "Add photos first: reference photos of the wearer" in page.message.text()
    assert not page.worker.is_busy


def test_print_template_writes_a_pdf(qtbot, page, tmp_path):
    assert page.width_spin.value() == 145.0
    assert page.print_template(tmp_path / "sheets" / "marked-frames", width_mm=140)
    _wait(qtbot, page)
    printed = page.last_print
    assert printed is not None and printed.pdf == tmp_path / "sheets" / "marked-frames.pdf"
    assert printed.pdf.read_bytes()[:4] == b"%PDF" and printed.png.is_file()
    assert str(printed.pdf) in page.print_path.text() and page.open_button.isEnabled()
    # The glasses.png of an attack run; a folder without one gives a message.
    assert page.print_template(tmp_path / "x", run_folder=tmp_path)
    _wait(qtbot, page)
    assert page.message.text().startswith(f"No glasses.png in {tmp_path}.")


@pytest.mark.slow
def test_gui_keeps_ticking_during_a_check(qtbot, page, clip):
    """A 10 ms timer in the GUI thread never waits 100 ms while the check reads and judges frames."""
    page.set_source(video=clip)
    page.record_check.setChecked(False)
    with TimerTicks() as ticks, ticks.run("check"):
        assert page.start_check()
        _wait(qtbot, page)
    assert page.last_check is not None and page.last_check.frames == len(SCENES) and page.run_dir is None
    print(ticks.report())
    assert ticks.count("check") > 10 and ticks.max_gap("check") < 0.1


def test_running_text():
    assert running_text(0, 0, 0) == "no face yet; 0 frames checked"
    assert running_text(12, 9, 2) == "fooled on 2 of 9 frames with a face (22%); 12 frames checked"
