"""Eyeglasses page: browse frames from the shipped eyeglass generator, tweak their latents, try them on.

A grid shows ``N`` frames sampled from the trained DCGAN generator (``advface.glasses.dcgan``; latents
``z ~ U(-1, 1)^25`` from a seed). Clicking a frame selects it; the sliders move the first latent dimensions
of the selected frame and re-render it live (one generator call of about 10 ms, run in the GUI thread).
"Try on a face" aligns a photo for the dlib template and shows its chip wearing the selected frame, put on
with :class:`~advface.glasses.geometry.GlassesRenderer` in the digital template pose, as the attack does.
Loading the generator and aligning the photo run through the app's worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from advface.alignment import FaceAligner
from advface.glasses.dcgan import generate, load_generator, sample_latents
from advface.glasses.geometry import GlassesRenderer, Placement
from advface.gui.pages.common import IMAGE_FILTER, JobPage, message_label, pixmap, shared_aligner
from advface.images import load_image
from advface.progress import report

TEMPLATE = "dlib"
FRAMES = 12
COLUMNS = 4
SLIDERS = 5
_STEPS = 100  # slider ticks per unit of latent
_CHIP_VIEW = 300


# -- results of the jobs (built off the GUI thread) -------------------------------------------------


@dataclass(frozen=True)
class Sampled:
    """Frames ``(N, 64, 176, 3)`` in [0, 1] generated from ``latents`` ``(N, 25)`` drawn with ``seed``."""

    generator: object
    seed: int
    latents: np.ndarray
    frames: np.ndarray


@dataclass(frozen=True)
class Fitted:
    """A photo's largest face aligned for ``TEMPLATE`` and the renderer that puts frames on its chip."""

    path: Path
    chip: np.ndarray
    renderer: GlassesRenderer


# -- the jobs ----------------------------------------------------------------------------------------


def load_frames_generator(*, progress=None):
    """The shipped eyeglass generator (sampling itself is cheap and runs in the GUI thread)."""
    report(progress, 0, 1, "eyeglasses", task="load generator")
    generator = load_generator()
    report(progress, 1, 1, "eyeglasses", task="loaded")
    return _Loaded(generator)


@dataclass(frozen=True)
class _Loaded:
    generator: object


def sample_frames(generator, *, n: int, seed: int) -> Sampled:
    """``n`` frames of ``generator`` from latents drawn with ``seed``."""
    latents = sample_latents(n, seed)
    return Sampled(generator, seed, latents, generate(generator, latents))


def fit_photo(*, path, aligner: FaceAligner, progress=None) -> Fitted:
    """Align the largest face of ``path`` for ``TEMPLATE`` (no face is an error) and build the renderer."""
    report(progress, 0, 2, "try on", task="align")
    chip = aligner.align_one(load_image(path), TEMPLATE, source=str(path)).chip
    report(progress, 1, 2, "try on", task="placement")
    renderer = GlassesRenderer(Placement.digital(TEMPLATE, 1))
    report(progress, 2, 2, "try on", task="done")
    return Fitted(Path(path), chip, renderer)


def wear(renderer: GlassesRenderer, frame: np.ndarray, chip: np.ndarray) -> np.ndarray:
    """``chip`` wearing ``frame`` (advface's renderer, template pose), ``(S, S, 3)`` in [0, 1]."""
    return np.asarray(renderer(frame[None].astype(np.float32), chip[None], np.array([0])))[0]


# -- widgets -----------------------------------------------------------------------------------------


class EyeglassesPage(JobPage):
    """Sample eyeglass frames, edit the selected one's latents and try it on a face photo."""

    title = "Eyeglasses"

    def __init__(self, worker, settings: QSettings, parent: QWidget | None = None):
        super().__init__(worker, settings, parent)
        self.aligner = shared_aligner()
        self.generator = None
        self.seed: int | None = None
        self.latents: np.ndarray | None = None  # (N, 25), the selected row edited by the sliders
        self.frames: np.ndarray | None = None  # (N, 64, 176, 3)
        self.selected = 0
        self.fitted: Fitted | None = None
        self.worn: np.ndarray | None = None

        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(int(settings.value("eyeglasses/seed", 0)))
        self.seed_spin.setPrefix("seed ")
        self.reroll_button = QPushButton("Re-roll")
        self.reroll_button.clicked.connect(lambda: self.reroll())

        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.buttons: list[QToolButton] = []
        for i in range(FRAMES):
            button = QToolButton()
            button.setCheckable(True)
            button.setIconSize(QSize(176, 64))
            button.setFixedSize(QSize(184, 72))
            button.clicked.connect(lambda _=False, k=i: self.select(k))
            self.group.addButton(button, i)
            self.buttons.append(button)

        self.preview = QLabel("no frame")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setFixedSize(352, 128)
        self.sliders: list[QSlider] = []
        self.slider_values: list[QLabel] = []
        for i in range(SLIDERS):
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(-_STEPS, _STEPS)
            slider.setEnabled(False)
            slider.valueChanged.connect(lambda value, d=i: self.set_latent(d, value / _STEPS))
            self.sliders.append(slider)
            self.slider_values.append(QLabel("0.00"))

        self.open_button = QPushButton("Try on a face...")
        self.open_button.clicked.connect(self._browse_image)
        self.bare = QLabel("face chip")
        self.worn_label = QLabel("wearing the frame")
        for label in (self.bare, self.worn_label):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setFixedSize(_CHIP_VIEW, _CHIP_VIEW)
        self.caption = QLabel("")

        self.message = message_label()

        self._layout()

    def _layout(self) -> None:
        grid_box = QGroupBox("Frames from the eyeglass generator")
        grid_layout = QVBoxLayout(grid_box)
        row = QHBoxLayout()
        row.addWidget(self.seed_spin)
        row.addWidget(self.reroll_button)
        row.addStretch(1)
        grid_layout.addLayout(row)
        grid = QGridLayout()
        for i, button in enumerate(self.buttons):
            grid.addWidget(button, *divmod(i, COLUMNS))
        grid_layout.addLayout(grid)

        edit_box = QGroupBox(f"Selected frame: first {SLIDERS} of 25 latent dimensions (z in [-1, 1])")
        edit = QGridLayout(edit_box)
        edit.addWidget(self.preview, 0, 0, SLIDERS, 1)
        for i, (slider, value) in enumerate(zip(self.sliders, self.slider_values, strict=True)):
            edit.addWidget(QLabel(f"z[{i}]"), i, 1)
            edit.addWidget(slider, i, 2)
            edit.addWidget(value, i, 3)

        try_box = QGroupBox(f"Try on a face ({TEMPLATE} chip)")
        try_layout = QVBoxLayout(try_box)
        try_layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignLeft)
        chips = QHBoxLayout()
        chips.addWidget(self.bare)
        chips.addWidget(self.worn_label)
        chips.addStretch(1)
        try_layout.addLayout(chips)
        try_layout.addWidget(self.caption)

        layout = QVBoxLayout(self)
        layout.addWidget(grid_box)
        layout.addWidget(edit_box)
        layout.addWidget(try_box)
        layout.addWidget(self.message)
        layout.addStretch(1)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self.frames is None and self.job is None and not getattr(self.worker, "is_busy", False):
            self.reroll()

    # -- actions ------------------------------------------------------------------------------------

    def reroll(self, seed: int | None = None) -> bool:
        """Sample new frames from ``seed`` (default: the spin box); False if a job is already running."""
        if seed is not None:
            self.seed_spin.setValue(seed)
        self.settings.setValue("eyeglasses/seed", self.seed_spin.value())
        if self.generator is None:  # the first time: load it through the worker, then sample
            return self._start("load", load_frames_generator)
        self._show_message("")
        self._show_sampled(sample_frames(self.generator, n=FRAMES, seed=self.seed_spin.value()))
        return True

    def select(self, index: int) -> None:
        """Select frame ``index``: the preview, the sliders and the try-on follow it."""
        if self.frames is None:
            return
        self.selected = int(index)
        self.buttons[self.selected].setChecked(True)
        z = self.latents[self.selected]
        for d, slider in enumerate(self.sliders):
            slider.blockSignals(True)
            slider.setValue(round(float(z[d]) * _STEPS))
            slider.blockSignals(False)
            slider.setEnabled(True)
            self.slider_values[d].setText(f"{z[d]:+.2f}")
        self._show_selected()

    def set_latent(self, dimension: int, value: float) -> None:
        """Set latent ``dimension`` of the selected frame to ``value`` and re-render it."""
        if self.frames is None or self.generator is None:
            return
        value = float(np.clip(value, -1.0, 1.0))
        self.latents[self.selected, dimension] = value
        self.slider_values[dimension].setText(f"{value:+.2f}")
        self.frames[self.selected] = generate(
            self.generator, self.latents[self.selected : self.selected + 1]
        )[0]
        self.buttons[self.selected].setIcon(QIcon(pixmap(self.frames[self.selected])))
        self._show_selected()

    def _browse_image(self) -> None:
        start = str(self.settings.value("eyeglasses/folder", ""))
        path, _ = QFileDialog.getOpenFileName(self, "Open a face photo", start, IMAGE_FILTER)
        if path:
            self.settings.setValue("eyeglasses/folder", str(Path(path).parent))
            self.open_image(path)

    def open_image(self, path) -> bool:
        """Align the largest face of ``path`` and show it wearing the selected frame."""
        return self._start("open", fit_photo, path=Path(path), aligner=self.aligner)

    def _start(self, job: str, fn, **kwargs) -> bool:
        self._show_message("")
        if not self.start_job(fn, job=job, **kwargs):
            self._show_message(self.busy_message())
            return False
        return True

    # -- display -------------------------------------------------------------------------------------

    @property
    def frame(self) -> np.ndarray | None:
        """The selected frame ``(64, 176, 3)``."""
        return None if self.frames is None else self.frames[self.selected]

    def _show_selected(self) -> None:
        frame = self.frame
        if frame is None:
            return
        self.preview.setPixmap(
            pixmap(frame).scaled(
                352, 128, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation
            )
        )
        self._show_try_on()

    def _show_try_on(self) -> None:
        if self.fitted is None or self.frame is None:
            return
        self.worn = wear(self.fitted.renderer, self.frame, self.fitted.chip)
        self.worn_label.setPixmap(self._chip_picture(self.worn))

    @staticmethod
    def _chip_picture(chip: np.ndarray) -> QPixmap:
        return pixmap(chip).scaled(
            _CHIP_VIEW,
            _CHIP_VIEW,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )

    # -- results ------------------------------------------------------------------------------------

    def on_finished(self, result) -> None:
        if isinstance(result, _Loaded):
            self.generator = result.generator
            self.reroll()
        elif isinstance(result, Fitted):
            self.fitted = result
            self.bare.setPixmap(self._chip_picture(result.chip))
            self.caption.setText(f"{result.path.name}: largest face, {TEMPLATE} template")
            if self.frame is None:
                self.worn_label.setText("sample frames first")
            self._show_try_on()

    def _show_sampled(self, result: Sampled) -> None:
        self.seed = result.seed
        self.latents, self.frames = result.latents.copy(), result.frames.copy()
        for button, frame in zip(self.buttons, self.frames, strict=True):
            button.setIcon(QIcon(pixmap(frame)))
        self.select(min(self.selected, len(self.frames) - 1))

    def on_failed(self, message: str, details: str = "") -> None:
        self._show_message(message)

    def on_cancelled(self) -> None:
        self._show_message("Stopped.")

    def on_busy(self, busy: bool, mine: bool) -> None:
        for button in (self.reroll_button, self.open_button):
            button.setEnabled(not busy)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
