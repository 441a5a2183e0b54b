"""The physical test page: print the eyeglass frames, wear them, and check a camera or a video frame by frame.

Two parts, both built on advface's public API and run on the shared worker:

* **Print**: :func:`advface.glasses.physical.printable_frames` writes a plain marked template, or the
  ``glasses.png`` of an eyeglass attack run, as an A4 sheet (PNG and PDF) to print at 100%.
* **Live check**: :func:`advface.glasses.camera.iter_checks` reads a webcam (on the worker thread) or a
  video file and judges every frame against the goal (dodge: the wearer's reference photos; impersonate:
  the target's photos). Each frame reaches the page through the progress callback, with the face box,
  the landmarks and the green marks of the printed frames (when found) drawn on a downscaled copy. With
  "Record" on, a run folder ``<runs root>/physical-<YYYYmmdd-HHMMSS>`` gets ``config.json``,
  ``frames.tsv`` (one row per frame, flushed as it goes) and ``summary.json`` (also after Stop or when
  the camera stops giving frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QSettings, Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from advface.alignment import Face, FaceAligner
from advface.errors import AdvfaceError
from advface.glasses.camera import CheckRecord, FrameCheck, iter_checks, record_checks
from advface.glasses.geometry import CANVAS_SHAPE
from advface.glasses.physical import marks_on_face, printable_frames
from advface.glasses.workflow import make_goal
from advface.gui.pages.common import (
    DEFAULT_MODEL,
    IMAGE_FILTER,
    JobPage,
    Picture,
    default_runs_root,
    embedding_model,
    message_label,
    model_choices,
    new_run_folder,
    select,
    shared_aligner,
)
from advface.images import load_image
from advface.progress import Progress, report

DEFAULT_WIDTH_MM = 145.0
DISPLAY_WIDTH = 640
"""Frames wider than this are downscaled (on the worker) before they are shown."""
PLAIN_TEMPLATE = "Plain marked template"
RUN_GLASSES = "glasses.png of an attack run"
VIDEO_FILTER = "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v);;All files (*)"
GOALS = {
    "dodge": "Reference photos of the wearer",
    "impersonate": "Photos of the target",
}

_PLAIN_GREY = 0.55  # the plain template's frame colour (as `advface glasses template`)
_BOX_COLOUR = (255, 200, 0)
_LANDMARK_COLOUR = (0, 220, 255)
_MARK_COLOUR = (255, 0, 255)


# -- printing ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrintedTemplate:
    """A sheet written by :func:`print_template`."""

    png: Path
    pdf: Path
    width_mm: float
    source: str  # PLAIN_TEMPLATE or the glasses.png used


def print_template(*, stem, width_mm: float = DEFAULT_WIDTH_MM, run_folder=None, progress=None):
    """Write ``{stem}.png`` and ``{stem}.pdf``: the plain marked frame, or ``run_folder/glasses.png``."""
    if run_folder is None:
        glasses, source = np.full((*CANVAS_SHAPE, 3), _PLAIN_GREY, np.float32), PLAIN_TEMPLATE
    else:
        path = Path(run_folder) / "glasses.png"
        if not path.is_file():
            raise AdvfaceError(
                f"No glasses.png in {run_folder}. Received: run_folder={str(run_folder)!r}. Choose the "
                "folder of an eyeglass attack run (advface glasses dodge|impersonate --out FOLDER), or "
                "print the plain marked template."
            )
        glasses, source = load_image(path), str(path)
    report(progress, 0, 1, "print")
    png, pdf = printable_frames(glasses, stem, width_mm=width_mm, marks=True)
    report(progress, 1, 1, "print")
    return PrintedTemplate(png=png, pdf=pdf, width_mm=float(width_mm), source=source)


# -- the live check ------------------------------------------------------------------------------------------
def running_text(frames: int, faces: int, fooled: int) -> str:
    """``"fooled on k of n frames with a face (x%); N frames checked"``."""
    if not faces:
        return f"no face yet; {frames} frames checked"
    return f"fooled on {fooled} of {faces} frames with a face ({fooled / faces:.0%}); {frames} frames checked"


def frame_marks(image: np.ndarray, check: FrameCheck, aligner: FaceAligner) -> np.ndarray | None:
    """The 7 green marks of printed frames on the face of ``check`` (:func:`marks_on_face`), or None."""
    if not check.face_found or check.landmarks is None or check.box is None:
        return None
    return marks_on_face(image, Face(box=check.box, landmarks=check.landmarks, score=math.nan), aligner)


def overlay(image: np.ndarray, check: FrameCheck, marks: np.ndarray | None) -> np.ndarray:
    """A copy of the frame at most :data:`DISPLAY_WIDTH` wide with the face box, the landmarks and the marks
    drawn on it: float32 ``(h, w, 3)`` in ``[0, 1]``."""
    h, w = image.shape[:2]
    scale = min(1.0, DISPLAY_WIDTH / w)
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if scale < 1.0:
        pixels = cv2.resize(pixels, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    pixels = np.ascontiguousarray(pixels)
    thick = max(1, round(2 * pixels.shape[1] / DISPLAY_WIDTH))
    if check.box is not None:
        left, top, right, bottom = (round(v * scale) for v in check.box)
        cv2.rectangle(pixels, (left, top), (right, bottom), _BOX_COLOUR, thick)
    if check.landmarks is not None:
        for x, y in check.landmarks * scale:
            cv2.circle(pixels, (round(x), round(y)), thick + 1, _LANDMARK_COLOUR, -1, cv2.LINE_AA)
    if marks is not None:
        for x, y in marks * scale:
            cv2.circle(pixels, (round(x), round(y)), 3 * thick + 2, _MARK_COLOUR, thick, cv2.LINE_AA)
    return pixels.astype(np.float32) / 255.0


def run_check(
    *,
    source,
    model: str,
    goal: str,
    photos,
    aligner: FaceAligner,
    out=None,
    progress=None,
) -> CheckRecord:
    """Check ``source`` (a camera index or a video file) frame by frame until it ends or Stop, recorded
    into ``out`` as it goes (:func:`advface.glasses.camera.record_checks`: config.json, frames.tsv row by
    row, summary.json however it ends).

    Progress: stage ``"prepare"`` once, then stage ``"check"`` once per frame with metrics ``frame`` (the
    :class:`FrameCheck` without its images), ``display`` (:func:`overlay`), ``marks``, ``frames``,
    ``frames_with_face``, ``frames_fooled``, ``fooled_fraction`` and ``threshold``.
    """
    # 1. Model and goal: a photo without a face fails here, before the camera is opened.
    face_model = embedding_model(model)
    if not photos:
        raise AdvfaceError(f"The {goal} check needs photos: {GOALS.get(goal, 'photos').lower()}.")
    report(progress, 0, None, "prepare")
    dodge = goal == "dodge"
    goal_object, _ = make_goal(
        goal,
        face_model,
        None,
        aligner,
        references=list(photos) if dodge else None,
        target=None if dodge else list(photos),
    )
    # 2. The source: a camera that cannot be opened or a missing file fails before the run folder exists.
    checks = iter_checks(source, face_model, goal_object, aligner=aligner, keep_images=True)

    def show(check: FrameCheck, so_far: CheckRecord) -> None:
        # 3. The marks of the printed frames and the picture to show, here off the GUI thread; after Stop
        #    the callback raises Cancelled here and the frame is not recorded.
        marks = frame_marks(check.image, check, aligner)
        report(
            progress,
            so_far.frames,
            checks.stream.total,
            "check",
            frame=replace(check, image=None, chip=None),  # the GUI shows `display`, not these
            display=overlay(check.image, check, marks),
            marks=marks,
            frames=so_far.frames,
            frames_with_face=so_far.frames_with_face,
            frames_fooled=so_far.frames_fooled,
            fooled_fraction=so_far.fooled_fraction,
            threshold=so_far.threshold,
        )

    arguments = {"source": source, "model": model, "goal": goal, "photos": [str(p) for p in photos]}
    return record_checks(checks, out, command="gui physical", arguments=arguments, on_frame=show)


# -- the page ------------------------------------------------------------------------------------------------
class PhysicalPage(JobPage):
    """Print the marked eyeglass frames, then check a camera or a video frame by frame while they are worn."""

    title = "Physical test"

    def __init__(self, worker, settings: QSettings, parent: QWidget | None = None):
        super().__init__(worker, settings, parent)
        self.aligner = shared_aligner()  # loaded once, here in the GUI thread, not in the first check
        self.run_dir: Path | None = None
        self.last_check: CheckRecord | None = None
        self.last_print: PrintedTemplate | None = None
        self.last_frame: FrameCheck | None = None
        self.counts = (0, 0, 0)  # frames, with a face, fooled (of the running or last check)
        self._source_text = ""

        # 1. Printing.
        self.width_spin = QDoubleSpinBox()
        self.width_spin.setRange(80.0, 250.0)
        self.width_spin.setDecimals(1)
        self.width_spin.setSuffix(" mm")
        self.width_spin.setValue(float(settings.value("physical/width_mm", DEFAULT_WIDTH_MM)))
        self.width_spin.setToolTip("Printed frame width, temple to temple (adults: about 130 to 145 mm)")
        self.frames_combo = QComboBox()
        self.frames_combo.addItems([PLAIN_TEMPLATE, RUN_GLASSES])
        self.frames_combo.currentTextChanged.connect(self._frames_source_changed)
        self.attack_edit = QLineEdit(str(settings.value("physical/attack_run", "")))
        self.attack_edit.setPlaceholderText("attack run folder (with glasses.png)")
        self.attack_button = QPushButton("Choose...")
        self.attack_button.clicked.connect(self._browse_attack_run)
        self.print_button = QPushButton("Print template...")
        self.print_button.clicked.connect(self._choose_print_file)
        self.print_path = QLabel("")
        self.print_path.setWordWrap(True)
        self.print_path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self._open_printed)

        # 2. The live check: source, model, goal, photos, recording.
        self.camera_radio = QRadioButton("Camera")
        self.video_radio = QRadioButton("Video file")
        sources = QButtonGroup(self)
        sources.addButton(self.camera_radio)
        sources.addButton(self.video_radio)
        self.camera_spin = QSpinBox()
        self.camera_spin.setRange(0, 99)
        self.camera_spin.setValue(int(settings.value("physical/camera", 0)))
        self.video_edit = QLineEdit(str(settings.value("physical/video", "")))
        self.video_button = QPushButton("Browse...")
        self.video_button.clicked.connect(self._browse_video)
        use_video = str(settings.value("physical/source", "camera")) == "video"
        (self.video_radio if use_video else self.camera_radio).setChecked(True)
        self.model_combo = QComboBox()
        self.model_combo.addItems(model_choices())
        select(self.model_combo, str(settings.value("physical/model", DEFAULT_MODEL)), DEFAULT_MODEL)
        self.goal_combo = QComboBox()
        self.goal_combo.addItems(list(GOALS))
        select(self.goal_combo, str(settings.value("physical/goal", "dodge")), "dodge")
        self.goal_combo.currentTextChanged.connect(self._goal_changed)
        self.photos_label = QLabel(GOALS[self.goal_combo.currentText()])
        self.photos_list = QListWidget()
        self.photos_list.setMaximumHeight(70)
        self.add_photos_button = QPushButton("Add photos...")
        self.add_photos_button.clicked.connect(self._browse_photos)
        self.clear_photos_button = QPushButton("Clear")
        self.clear_photos_button.clicked.connect(self.photos_list.clear)
        self.record_check = QCheckBox("Record to a run folder")
        self.record_check.setChecked(str(settings.value("physical/record", "true")).lower() == "true")
        self.runs_edit = QLineEdit(str(settings.value("physical/runs_root", str(default_runs_root()))))
        self.runs_edit.setToolTip("Runs root: each check writes a new folder physical-<date-time> in it")
        self.runs_button = QPushButton("Browse...")
        self.runs_button.clicked.connect(self._browse_runs_root)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(lambda: self.start_check())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)

        # 3. What the check shows.
        self.frame_view = Picture("Frame", size=560, height=420)
        self.tally = QLabel("Choose a source and photos, then press Start.")
        self.tally.setWordWrap(True)
        self.tally.setStyleSheet("font-weight: bold;")
        self.tally.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = message_label()

        self._frames_source_changed(self.frames_combo.currentText())
        self._layout()

    def _layout(self) -> None:
        print_box = QGroupBox("1. Print the frames")
        grid = QGridLayout(print_box)
        grid.addWidget(QLabel("Frame width:"), 0, 0)
        grid.addWidget(self.width_spin, 0, 1, 1, 2)
        grid.addWidget(QLabel("Frames:"), 1, 0)
        grid.addWidget(self.frames_combo, 1, 1, 1, 2)
        grid.addWidget(self.attack_edit, 2, 0, 1, 2)
        grid.addWidget(self.attack_button, 2, 2)
        grid.addWidget(self.print_button, 3, 0, 1, 2)
        grid.addWidget(self.open_button, 3, 2)
        grid.addWidget(self.print_path, 4, 0, 1, 3)

        check_box = QGroupBox("2. Wear them and check")
        grid = QGridLayout(check_box)
        grid.addWidget(self.camera_radio, 0, 0)
        grid.addWidget(self.camera_spin, 0, 1, 1, 2)
        grid.addWidget(self.video_radio, 1, 0)
        grid.addWidget(self.video_edit, 1, 1)
        grid.addWidget(self.video_button, 1, 2)
        grid.addWidget(QLabel("Model:"), 2, 0)
        grid.addWidget(self.model_combo, 2, 1, 1, 2)
        grid.addWidget(QLabel("Goal:"), 3, 0)
        grid.addWidget(self.goal_combo, 3, 1, 1, 2)
        grid.addWidget(self.photos_label, 4, 0, 1, 3)
        grid.addWidget(self.photos_list, 5, 0, 1, 3)
        photo_buttons = QHBoxLayout()
        photo_buttons.addWidget(self.add_photos_button)
        photo_buttons.addWidget(self.clear_photos_button)
        photo_buttons.addStretch(1)
        grid.addLayout(photo_buttons, 6, 0, 1, 3)
        grid.addWidget(self.record_check, 7, 0, 1, 3)
        grid.addWidget(self.runs_edit, 8, 0, 1, 2)
        grid.addWidget(self.runs_button, 8, 2)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        grid.addLayout(buttons, 9, 0, 1, 3)
        grid.setRowStretch(10, 1)

        left = QVBoxLayout()
        left.addWidget(print_box)
        left.addWidget(check_box, 1)
        top = QHBoxLayout()
        top.addLayout(left)
        top.addWidget(self.frame_view, 1)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tally)
        layout.addWidget(self.message)
        layout.addStretch(1)

    # -- settings -----------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model_combo.currentText()

    @property
    def goal_name(self) -> str:
        return self.goal_combo.currentText()

    @property
    def photos(self) -> list[Path]:
        return [Path(self.photos_list.item(i).text()) for i in range(self.photos_list.count())]

    def set_photos(self, paths) -> None:
        """The reference (dodge) or target (impersonate) photos."""
        self.photos_list.clear()
        self.photos_list.addItems([str(p) for p in paths])

    def set_source(self, *, camera: int | None = None, video=None) -> None:
        """Check camera index ``camera`` or the video file ``video``."""
        if camera is not None:
            self.camera_spin.setValue(int(camera))
            self.camera_radio.setChecked(True)
        elif video is not None:
            self.video_edit.setText(str(video))
            self.video_radio.setChecked(True)

    def _goal_changed(self, goal: str) -> None:
        self.photos_label.setText(GOALS.get(goal, ""))

    def _frames_source_changed(self, text: str) -> None:
        from_run = text == RUN_GLASSES
        self.attack_edit.setEnabled(from_run)
        self.attack_button.setEnabled(from_run and not self.worker.is_busy)

    def _browse_attack_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Eyeglass attack run folder", self.attack_edit.text())
        if folder:
            self.attack_edit.setText(folder)

    def _browse_video(self) -> None:
        start = self.video_edit.text() or str(self.settings.value("physical/folder", ""))
        path, _ = QFileDialog.getOpenFileName(self, "Video file", start, VIDEO_FILTER)
        if path:
            self.set_source(video=path)

    def _browse_photos(self) -> None:
        start = str(self.settings.value("physical/folder", ""))
        paths, _ = QFileDialog.getOpenFileNames(self, GOALS[self.goal_name], start, IMAGE_FILTER)
        if paths:
            self.settings.setValue("physical/folder", str(Path(paths[0]).parent))
            self.photos_list.addItems(paths)

    def _browse_runs_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Runs root", self.runs_edit.text())
        if folder:
            self.runs_edit.setText(folder)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)

    # -- printing -----------------------------------------------------------------------------------
    def _choose_print_file(self) -> None:
        start = str(self.settings.value("physical/print_folder", ""))
        name = "marked-frames" if self.frames_combo.currentText() == PLAIN_TEMPLATE else "glasses-frames"
        path, _ = QFileDialog.getSaveFileName(
            self, "Write the sheet to print", str(Path(start) / f"{name}.pdf"), "PDF (*.pdf)"
        )
        if path:
            self.settings.setValue("physical/print_folder", str(Path(path).parent))
            self.print_template(path)

    def print_template(self, stem, *, width_mm: float | None = None, run_folder=None) -> bool:
        """Write ``{stem}.pdf`` and ``{stem}.png`` on the worker (the plain template unless the frames
        combo, or ``run_folder``, names an attack run); ``False`` with a message when it cannot start."""
        if width_mm is not None:
            self.width_spin.setValue(width_mm)
        if run_folder is not None:
            self.frames_combo.setCurrentText(RUN_GLASSES)
            self.attack_edit.setText(str(run_folder))
        self._show_message("")
        folder = None
        if self.frames_combo.currentText() == RUN_GLASSES:
            folder = self.attack_edit.text().strip()
            if not folder:
                self._show_message("Choose the attack run folder (with glasses.png) first.")
                return False
            self.settings.setValue("physical/attack_run", folder)
        self.settings.setValue("physical/width_mm", self.width_spin.value())
        started = self.start_job(
            print_template, job="print", stem=Path(stem), width_mm=self.width_spin.value(), run_folder=folder
        )
        if not started:
            self._show_message(self.busy_message())
            return False
        self.print_path.setText("Writing ...")
        return True

    def _open_printed(self) -> None:
        if self.last_print is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.last_print.pdf)))

    # -- the live check -----------------------------------------------------------------------------
    def start_check(self) -> bool:
        """Start checking the chosen camera or video; ``False`` with a message when something is missing
        or the worker is busy."""
        self._show_message("")
        if self.video_radio.isChecked():
            video = self.video_edit.text().strip()
            if not video:
                self._show_message("Choose a video file first (or a camera).")
                return False
            source, self._source_text = video, Path(video).name
        else:
            source = self.camera_spin.value()
            self._source_text = f"Camera {source}"
        photos = self.photos
        if not photos:
            self._show_message(f"Add photos first: {GOALS[self.goal_name].lower()}.")
            return False
        out = None
        if self.record_check.isChecked():
            root = self.runs_edit.text().strip() or str(default_runs_root())
            out = new_run_folder(root, "physical")
            self.settings.setValue("physical/runs_root", root)
        for key, value in (
            ("source", "video" if self.video_radio.isChecked() else "camera"),
            ("camera", self.camera_spin.value()),
            ("video", self.video_edit.text().strip()),
            ("model", self.model_name),
            ("goal", self.goal_name),
            ("record", "true" if out is not None else "false"),
        ):
            self.settings.setValue(f"physical/{key}", value)
        started = self.start_job(
            run_check,
            job="check",
            source=source,
            model=self.model_name,
            goal=self.goal_name,
            photos=photos,
            aligner=self.aligner,
            out=out,
        )
        if not started:
            self._show_message(self.busy_message())
            return False
        self.run_dir, self.last_check, self.last_frame = out, None, None
        self.counts = (0, 0, 0)
        self.frame_view.clear()
        self.tally.setText(f"Starting: {self.model_name}, {self.goal_name}, {self._source_text} ...")
        return True

    def _kept(self, frames: int) -> str:
        if self.run_dir is None:
            return f"{frames} frames were checked (not recorded)."
        return f"The {frames} frames checked are kept in {self.run_dir}."

    # -- the worker's reports -----------------------------------------------------------------------
    def on_progress(self, p: Progress) -> None:
        if self.job != "check":
            return
        if p.stage == "prepare":
            self.tally.setText("Loading the model and embedding the photos ...")
            return
        if p.stage != "check":
            return
        m = p.metrics
        check: FrameCheck = m["frame"]
        self.last_frame = check
        self.counts = (m["frames"], m["frames_with_face"], m["frames_fooled"])
        self.frame_view.show_image(m["display"], self.caption(check, m["marks"], m["threshold"]))
        self.tally.setText(running_text(*self.counts))

    def caption(self, check: FrameCheck, marks, threshold: float) -> str:
        """The decision on one frame, e.g. ``"frame 3 (0.6 s): fooled, distance 0.71 vs threshold 0.6"``."""
        head = f"frame {check.index} ({check.time_s:.1f} s): "
        if not check.face_found:
            return head + "no face"
        decision = "fooled" if check.fooled else "recognised"
        relation = ">" if check.score > threshold else "<="
        marks_text = "marks: none" if marks is None else f"marks: {len(marks)} found"
        return (
            f"{head}{decision}, distance {check.score:.3f} {relation} threshold {threshold:g}; {marks_text}"
        )

    def on_finished(self, result) -> None:
        if isinstance(result, PrintedTemplate):
            self.last_print = result
            self.print_path.setText(f"{result.pdf}\n(and {result.png.name}; print at 100%)")
            self.open_button.setEnabled(True)
            return
        if not isinstance(result, CheckRecord):
            return
        self.last_check = result
        self.counts = (result.frames, result.frames_with_face, result.frames_fooled)
        self.tally.setText(running_text(*self.counts) + f" ({result.ended})")
        if result.ended == "camera stopped":
            self._show_message(
                f"{self._source_text} stopped giving frames (unplugged?). {self._kept(result.frames)} "
                "Plug it in again and press Start (a new run folder)."
            )

    def on_failed(self, message: str, details: str = "") -> None:
        if self.job == "print":
            self.print_path.setText("")
            self._show_message(message)
            return
        frames = self.counts[0]
        kept = f" {self._kept(frames)}" if frames and self.run_dir is not None else ""
        self._show_message(message + kept)
        if not frames:
            self.tally.setText("Check failed.")

    def on_cancelled(self) -> None:
        if self.job == "print":
            self.print_path.setText("Stopped.")
            return
        self.tally.setText(running_text(*self.counts) + " (stopped)")
        self._show_message(f"Stopped. {self._kept(self.counts[0])}")

    def on_busy(self, busy: bool, mine: bool) -> None:
        for widget in (
            self.start_button,
            self.print_button,
            self.add_photos_button,
            self.clear_photos_button,
            self.video_button,
            self.runs_button,
        ):
            widget.setEnabled(not busy)
        self.attack_button.setEnabled(not busy and self.frames_combo.currentText() == RUN_GLASSES)
        self.stop_button.setEnabled(busy and mine)
