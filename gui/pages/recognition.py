"""Face recognition page: 1:1 verification of two photos and 1:N identification against a gallery folder.

Photos come from files or a camera (one frame, kept as a PNG under ``runs/gui/captures``). The page only
builds configs and calls advface's public API (images, alignment, zoo, verification, the camera stream).
Heavy work (reading the camera, detection, model loading, embedding, the gallery) runs through the app's
worker; the results come
back on ``worker.finished`` as the frozen dataclasses below and update the widgets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSettings, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from advface.alignment import AlignedFace, FaceAligner
from advface.errors import AdvfaceError, NoFaceError
from advface.gui.pages.common import (
    DEFAULT_MODEL,
    IMAGE_FILTER,
    JobPage,
    default_runs_root,
    embedding_model,
    message_label,
    model_choices,
    pixmap,
    shared_aligner,
)
from advface.images import load_image, save_image
from advface.progress import report
from advface.verification import Gallery, Identification, gallery_files
from advface.zoo import get_spec

SLOTS = ("A", "B")
_PHOTO_SIZE = 320
_CHIP_SIZE = 150


# -- results of the jobs (built off the GUI thread) -------------------------------------------------


@dataclass(frozen=True)
class SlotView:
    """A photo opened into a slot: the image, every face found (largest first) for ``template``."""

    slot: str
    path: Path
    image: np.ndarray
    faces: tuple[AlignedFace, ...]
    template: str


@dataclass(frozen=True)
class VerifyResult:
    """Distance between the largest faces of the two slots, in ``model``'s metric."""

    a: SlotView
    b: SlotView
    model: str
    distance: float
    threshold: float

    @property
    def same(self) -> bool:
        return self.distance <= self.threshold


@dataclass(frozen=True)
class IdentifyResult:
    """The top-k identities of the probe in a gallery folder."""

    probe: SlotView
    gallery: Path
    model: str
    identification: Identification
    gallery_images: int
    skipped: tuple[str, ...]


# -- the jobs: plain functions of advface's public API ----------------------------------------------


def prepare_slot(*, slot: str, path, template: str, aligner: FaceAligner, progress=None) -> SlotView:
    """Load ``path`` and align every face in it for ``template`` (no face is not an error here)."""
    image = load_image(path)
    faces = tuple(aligner.align(image, template))
    report(progress, 1, 1, "detect", faces=len(faces))
    return SlotView(slot, Path(path), image, faces, template)


def capture_slot(
    *, slot: str, camera: int, folder, template: str, aligner: FaceAligner, progress=None
) -> SlotView:
    """Take one frame from camera ``camera`` (read here, off the GUI thread), keep it as a PNG in ``folder``
    (what was verified stays on disk) and open it into ``slot``."""
    from advface.glasses.camera import open_stream

    report(progress, 0, 2, "camera")
    with open_stream(camera) as stream:  # a camera that cannot be opened is an AdvfaceError that says why
        frame = next(iter(stream), None)
    if frame is None:
        raise AdvfaceError(
            f"Camera {camera} stopped giving frames (unplugged?). Plug it in again, or open an image instead."
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = save_image(Path(folder) / f"camera{camera}-{slot}-{stamp}-{frame.index}.png", frame.image)
    return prepare_slot(slot=slot, path=path, template=template, aligner=aligner, progress=progress)


def _largest(view: SlotView) -> AlignedFace:
    if not view.faces:
        raise NoFaceError(
            f"No face found in image {view.slot} ({view.path.name}). Use a photo with a frontal face at "
            "least about 80 pixels wide."
        )
    return view.faces[0]


def verify_pair(*, path_a, path_b, model: str, aligner: FaceAligner, progress=None) -> VerifyResult:
    """1:1 verification of the largest faces of two photos with zoo model ``model``."""
    # 1. Load the model (cached per process after the first call).
    face_model = embedding_model(model)
    report(progress, 1, 3, "model")
    # 2. Detect and align both photos for the model's template.
    template = face_model.template.name
    a = prepare_slot(slot="A", path=path_a, template=template, aligner=aligner)
    b = prepare_slot(slot="B", path=path_b, template=template, aligner=aligner)
    chips = np.stack([_largest(a).chip, _largest(b).chip])
    report(progress, 2, 3, "align")
    # 3. Embed and compare against the model's threshold.
    embeddings = face_model.embed(chips)
    distance = float(face_model.distance(embeddings[:1], embeddings[1:])[0])
    report(progress, 3, 3, "embed", distance=distance)
    return VerifyResult(a, b, face_model.name, distance, float(face_model.threshold))


def identify_probe(
    *, probe, gallery, model: str, k: int, aligner: FaceAligner, slot: str = "A", progress=None
) -> IdentifyResult:
    """1:N identification of the largest face of ``probe`` against the gallery folder ``gallery``."""
    face_model = embedding_model(model)
    template = face_model.template.name
    probe_view = prepare_slot(slot=slot, path=probe, template=template, aligner=aligner)
    probe_chip = _largest(probe_view).chip
    # 1. Enrol the gallery: the largest face of each image (the probe's own file is left out).
    entries = [(f, label) for f, label in gallery_files(gallery) if f.resolve() != Path(probe).resolve()]
    chips, labels, skipped = [], [], []
    for step, (f, label) in enumerate(entries, 1):
        faces = aligner.align(load_image(f), template)
        if faces:
            chips.append(faces[0].chip)
            labels.append(label)
        else:
            skipped.append(f.name)
        report(progress, step, len(entries), "gallery")
    if not chips:
        raise AdvfaceError(f"No face found in any image of the gallery {gallery}. Choose another folder.")
    # 2. Search the probe's embedding among the enrolled ones.
    found = Gallery(
        face_model.embed(np.stack(chips)),
        labels,
        metric=face_model.spec.distance,
        threshold=float(face_model.threshold),
    ).search(face_model.embed(probe_chip[None]), k=k)[0]
    return IdentifyResult(probe_view, Path(gallery), face_model.name, found, len(labels), tuple(skipped))


# -- widgets -----------------------------------------------------------------------------------------


def _annotated(view: SlotView, size: int) -> QPixmap:
    """The photo scaled to fit ``size`` with every face's box (largest green) and landmarks drawn."""
    h, w = view.image.shape[:2]
    scale = min(size / w, size / h)
    picture = pixmap(view.image).scaled(
        max(1, round(w * scale)),
        max(1, round(h * scale)),
        Qt.AspectRatioMode.IgnoreAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )
    painter = QPainter(picture)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    for i, aligned in enumerate(view.faces):
        colour = QColor("#2ecc40") if i == 0 else QColor("#ffdc00")
        painter.setPen(QPen(colour, 2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        left, top, right, bottom = (v * scale for v in aligned.face.box)
        painter.drawRect(QRectF(left, top, right - left, bottom - top))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("#ff4136"))
        for x, y in aligned.face.landmarks:
            painter.drawEllipse(QPointF(x * scale, y * scale), 2.5, 2.5)
    painter.end()
    return picture


class DistanceGauge(QWidget):
    """A horizontal bar: the distance (green within the threshold, red beyond) and the threshold mark."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.distance: float | None = None
        self.threshold: float | None = None
        self.setMinimumSize(240, 28)

    def set_values(self, distance: float | None, threshold: float | None) -> None:
        self.distance, self.threshold = distance, threshold
        self.setToolTip("" if distance is None else f"distance {distance:.4f}, threshold {threshold:g}")
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        bar = QRectF(self.rect()).adjusted(1, 6, -1, -6)
        painter.setPen(QPen(QColor("#888888"), 1))
        painter.setBrush(QColor("#eeeeee"))
        painter.drawRect(bar)
        if self.distance is not None and self.threshold:
            top = max(2 * self.threshold, self.distance * 1.05)
            fill = QRectF(bar.left(), bar.top(), bar.width() * min(self.distance / top, 1.0), bar.height())
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor("#2ecc40") if self.distance <= self.threshold else QColor("#ff4136"))
            painter.drawRect(fill)
            x = bar.left() + bar.width() * self.threshold / top
            painter.setPen(QPen(QColor("#111111"), 2))
            painter.drawLine(QPointF(x, bar.top() - 4), QPointF(x, bar.bottom() + 4))
        painter.end()


class _Slot(QGroupBox):
    """One image slot: an Open button, the annotated photo and the aligned chip."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(f"Image {name}", parent)
        self.open_button = QPushButton("Open image...")
        self.camera_button = QPushButton("Camera")
        self.camera_button.setToolTip("Take a frame from the camera chosen below (kept as a PNG)")
        self.photo = QLabel("No image")
        self.photo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.photo.setMinimumSize(_PHOTO_SIZE, _PHOTO_SIZE)
        self.chip = QLabel("chip")
        self.chip.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.chip.setFixedSize(_CHIP_SIZE, _CHIP_SIZE)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        pictures = QHBoxLayout()
        pictures.addWidget(self.photo, 1)
        pictures.addWidget(self.chip, 0, Qt.AlignmentFlag.AlignTop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button, 1)
        buttons.addWidget(self.camera_button)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addLayout(pictures)
        layout.addWidget(self.caption)

    def clear(self) -> None:
        self.photo.clear()
        self.photo.setText("No image")
        self.chip.clear()
        self.chip.setText("chip")
        self.caption.setText("")

    def show_view(self, view: SlotView) -> None:
        self.photo.setPixmap(_annotated(view, _PHOTO_SIZE))
        if view.faces:
            chip = pixmap(view.faces[0].chip).scaled(
                _CHIP_SIZE,
                _CHIP_SIZE,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
            self.chip.setPixmap(chip)
        else:
            self.chip.clear()
            self.chip.setText("no face")
        count = len(view.faces)
        self.caption.setText(f"{view.path.name}: {count} face{'s' if count != 1 else ''} ({view.template})")


class RecognitionPage(JobPage):
    """Verify two photos (1:1) or identify one against a gallery folder (1:N) with a zoo model."""

    title = "Face recognition"

    def __init__(self, worker, settings: QSettings, parent: QWidget | None = None):
        super().__init__(worker, settings, parent)
        self.aligner = shared_aligner()
        self.paths: dict[str, Path | None] = dict.fromkeys(SLOTS)
        self.views: dict[str, SlotView | None] = dict.fromkeys(SLOTS)
        self.gallery: Path | None = None
        self.last_result: VerifyResult | IdentifyResult | None = None
        self._opening: str | None = None  # the slot an "open" job fills

        self.slots = {name: _Slot(name) for name in SLOTS}
        for name, slot in self.slots.items():
            slot.open_button.clicked.connect(lambda _=False, n=name: self._browse_image(n))
            slot.camera_button.clicked.connect(lambda _=False, n=name: self.capture(n))
        self.camera_spin = QSpinBox()
        self.camera_spin.setRange(0, 63)
        self.camera_spin.setPrefix("camera ")
        self.camera_spin.setValue(int(settings.value("recognition/camera", 0)))
        self.camera_spin.setToolTip("The camera the Camera buttons read (0: the first webcam)")

        self.model_combo = QComboBox()
        self.model_combo.addItems(model_choices())
        saved = str(settings.value("recognition/model", DEFAULT_MODEL))
        index = self.model_combo.findText(saved)
        self.model_combo.setCurrentIndex(max(index, self.model_combo.findText(DEFAULT_MODEL), 0))
        self.model_combo.currentTextChanged.connect(self._model_changed)

        self.verify_button = QPushButton("Verify")
        self.verify_button.clicked.connect(self.verify)
        self.gauge = DistanceGauge()
        self.verdict = QLabel("Open two photos and press Verify.")
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.gallery_button = QPushButton("Gallery folder...")
        self.gallery_button.clicked.connect(self._browse_gallery)
        self.gallery_label = QLabel("no gallery")
        self.probe_combo = QComboBox()
        self.probe_combo.addItems([f"probe: image {name}" for name in SLOTS])
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 50)
        self.k_spin.setValue(int(settings.value("recognition/k", 5)))
        self.k_spin.setPrefix("top ")
        self.identify_button = QPushButton("Identify")
        self.identify_button.clicked.connect(lambda: self.identify())
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Identity", "Distance", "Within threshold"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.identity = QLabel("")

        self.message = message_label()

        self._layout()

    def _layout(self) -> None:
        images = QHBoxLayout()
        for slot in self.slots.values():
            images.addWidget(slot)
        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("Model:"))
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.camera_spin)

        verify_box = QGroupBox("Verification (1:1)")
        verify = QGridLayout(verify_box)
        verify.addWidget(self.verify_button, 0, 0)
        verify.addWidget(self.gauge, 0, 1)
        verify.addWidget(self.verdict, 1, 0, 1, 2)

        identify_box = QGroupBox("Identification (1:N)")
        identify = QVBoxLayout(identify_box)
        row = QHBoxLayout()
        for widget in (self.gallery_button, self.gallery_label, self.probe_combo, self.k_spin):
            row.addWidget(widget)
        row.addWidget(self.identify_button)
        identify.addLayout(row)
        identify.addWidget(self.identity)
        identify.addWidget(self.table)

        layout = QVBoxLayout(self)
        layout.addLayout(images)
        layout.addLayout(model_row)
        layout.addWidget(verify_box)
        layout.addWidget(identify_box, 1)
        layout.addWidget(self.message)

    # -- configuration ------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.model_combo.currentText()

    def _model_changed(self, name: str) -> None:
        self.settings.setValue("recognition/model", name)
        self.gauge.set_values(None, None)
        self.verdict.setText("Model changed: press Verify.")

    def _template(self) -> str:
        return get_spec(self.model_name).template

    # -- actions ------------------------------------------------------------------------------------

    def _browse_image(self, slot: str) -> None:
        start = str(self.settings.value("recognition/folder", ""))
        path, _ = QFileDialog.getOpenFileName(self, f"Open image {slot}", start, IMAGE_FILTER)
        if path:
            self.settings.setValue("recognition/folder", str(Path(path).parent))
            self.open_image(slot, path)

    def _browse_gallery(self) -> None:
        start = str(self.settings.value("recognition/gallery", ""))
        folder = QFileDialog.getExistingDirectory(self, "Gallery folder (one sub-folder per person)", start)
        if folder:
            self.set_gallery(folder)

    def open_image(self, slot: str, path) -> bool:
        """Show ``path`` in ``slot`` ("A" or "B") with its faces; False if a job is already running."""
        if slot not in SLOTS:
            raise ValueError(f"slot must be one of {SLOTS}. Received: slot={slot!r}.")
        self.paths[slot] = Path(path)
        self._opening = slot
        return self._start(
            "open", prepare_slot, slot=slot, path=Path(path), template=self._template(), aligner=self.aligner
        )

    def capture(self, slot: str, camera: int | None = None) -> bool:
        """Take a frame from the camera (default: the camera box) into ``slot``; False if a job is running."""
        if slot not in SLOTS:
            raise ValueError(f"slot must be one of {SLOTS}. Received: slot={slot!r}.")
        if camera is not None:
            self.camera_spin.setValue(camera)
        self.settings.setValue("recognition/camera", self.camera_spin.value())
        self._opening = slot
        return self._start(
            "camera",  # a failure keeps what the slot showed
            capture_slot,
            slot=slot,
            camera=self.camera_spin.value(),
            folder=Path(str(self.settings.value("recognition/captures", default_runs_root() / "captures"))),
            template=self._template(),
            aligner=self.aligner,
        )

    def set_gallery(self, folder) -> None:
        self.gallery = Path(folder)
        self.settings.setValue("recognition/gallery", str(self.gallery))
        self.gallery_label.setText(self.gallery.name or str(self.gallery))
        self.gallery_label.setToolTip(str(self.gallery))

    def verify(self) -> bool:
        """Start 1:1 verification of the photos in A and B."""
        missing = [s for s in SLOTS if self.paths[s] is None]
        if missing:
            self._show_message(f"Open an image in slot {' and '.join(missing)} first.")
            return False
        return self._start(
            "verify",
            verify_pair,
            path_a=self.paths["A"],
            path_b=self.paths["B"],
            model=self.model_name,
            aligner=self.aligner,
        )

    def identify(self, gallery=None, *, probe: str | None = None, k: int | None = None) -> bool:
        """Start 1:N identification of image ``probe`` (default: the probe combo) in ``gallery``."""
        if gallery is not None:
            self.set_gallery(gallery)
        if k is not None:
            self.k_spin.setValue(k)
        if probe is not None:
            self.probe_combo.setCurrentIndex(SLOTS.index(probe))
        probe = SLOTS[self.probe_combo.currentIndex()]
        if self.paths[probe] is None:
            self._show_message(f"Open an image in slot {probe} first: it is the probe.")
            return False
        if self.gallery is None:
            self._show_message("Choose a gallery folder first (one sub-folder per person, or name[N].jpg).")
            return False
        self.settings.setValue("recognition/k", self.k_spin.value())
        return self._start(
            "identify",
            identify_probe,
            probe=self.paths[probe],
            gallery=self.gallery,
            model=self.model_name,
            k=self.k_spin.value(),
            aligner=self.aligner,
            slot=probe,
        )

    def _start(self, job: str, fn, **kwargs) -> bool:
        self._show_message("")
        if not self.start_job(fn, job=job, **kwargs):
            if job == "open":
                self.paths[self._opening] = self.views[self._opening] and self.views[self._opening].path
            self._show_message(self.busy_message())
            return False
        return True

    # -- results ------------------------------------------------------------------------------------

    def on_finished(self, result) -> None:
        if isinstance(result, SlotView):
            self.views[result.slot] = result
            self.paths[result.slot] = result.path
            self.slots[result.slot].show_view(result)
            if not result.faces:
                self._show_message(
                    f"No face found in image {result.slot} ({result.path.name}). Use a photo with a "
                    "frontal face at least about 80 pixels wide."
                )
        elif isinstance(result, VerifyResult):
            self._show_verification(result)
        elif isinstance(result, IdentifyResult):
            self._show_identification(result)

    def _show_verification(self, result: VerifyResult) -> None:
        self.last_result = result
        for view in (result.a, result.b):
            self.views[view.slot] = view
            self.slots[view.slot].show_view(view)
        self.gauge.set_values(result.distance, result.threshold)
        if result.same:
            text = f"same person: {result.distance:.3f} <= {result.threshold:g}"
        else:
            text = f"different people: {result.distance:.3f} > {result.threshold:g}"
        self.verdict.setText(f"{text}  ({result.model})")
        self.verdict.setStyleSheet(f"color: {'#1e7e34' if result.same else '#b00020'}; font-weight: bold;")

    def _show_identification(self, result: IdentifyResult) -> None:
        self.last_result = result
        found = result.identification
        self.table.setRowCount(len(found.matches))
        for row, match in enumerate(found.matches):
            within = match.distance <= found.threshold
            cells = (match.label, f"{match.distance:.4f}", "yes" if within else "no")
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(row, column, item)
        head = (
            f"identified as {found.label}" if found.accepted else "unknown: no identity within the threshold"
        )
        extra = f"; {len(result.skipped)} without a face skipped" if result.skipped else ""
        self.identity.setText(
            f"{result.probe.path.name}: {head} ({result.model}, threshold {found.threshold:g}, "
            f"{result.gallery_images} gallery images{extra})"
        )

    def on_failed(self, message: str, details: str = "") -> None:
        if self.job == "open" and self._opening is not None:
            self.paths[self._opening] = None  # unreadable: the slot stays empty
            self.views[self._opening] = None
            self.slots[self._opening].clear()
        self._show_message(message)

    def on_cancelled(self) -> None:
        self._show_message("Stopped.")

    def on_busy(self, busy: bool, mine: bool) -> None:
        for button in (
            self.verify_button,
            self.identify_button,
            *(s.open_button for s in self.slots.values()),
            *(s.camera_button for s in self.slots.values()),
        ):
            button.setEnabled(not busy)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
