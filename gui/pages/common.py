"""Small pieces every launcher page uses: the image filter of open dialogs, numpy images as pixmaps, the
in-page message line, the embedding-model loader, a captioned picture and :class:`JobPage`, the base class
of pages that run jobs on the shared worker."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QComboBox, QGroupBox, QLabel, QVBoxLayout, QWidget

from advface.errors import AdvfaceError
from advface.images import to_uint8

DEFAULT_MODEL = "dlib-resnet"
IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff *.gif);;All files (*)"


def pixmap(image: np.ndarray) -> QPixmap:
    """A float ``(H, W, 3)`` image in ``[0, 1]`` as a QPixmap (8-bit, a copy that owns its pixels)."""
    pixels = np.ascontiguousarray(to_uint8(image))
    h, w = pixels.shape[:2]
    return QPixmap.fromImage(QImage(pixels.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy())


def message_label() -> QLabel:
    """The red, selectable line where a page shows what went wrong."""
    label = QLabel("")
    label.setWordWrap(True)
    label.setStyleSheet("color: #b00020;")
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def embedding_model(name: str):
    """The zoo model ``name`` (cached per process), which must output embeddings."""
    from advface.zoo import load_model

    model = load_model(name)
    if model.kind != "embedding":
        raise AdvfaceError(
            f"This page compares embeddings, and {model.name} is a {model.kind}. Received: "
            f"model={name!r}. Choose an embedding model."
        )
    return model


def model_choices() -> list[str]:
    """Names of the embedding models available here (the default when the zoo cannot be listed)."""
    from advface.zoo import list_models

    try:
        rows = list_models()
    except AdvfaceError:
        return [DEFAULT_MODEL]
    names = [r["name"] for r in rows if r["available"] and r["kind"] == "embedding"]
    return names or [DEFAULT_MODEL]


@functools.cache
def shared_aligner():
    """The launcher's one :class:`~advface.alignment.FaceAligner`, with dlib's detector and landmark
    models loaded. Loading holds Python's GIL for a few hundred ms (the window would freeze), so the
    launcher does it once, at start-up, and every page's jobs use this aligner (jobs run one at a time on
    the worker, so it is never used by two threads at once)."""
    import numpy as np

    from advface.alignment import FaceAligner

    aligner = FaceAligner()
    aligner.detect(np.zeros((64, 64, 3), np.float32))  # loads the models
    return aligner


def default_runs_root() -> Path:
    """Where the pages write their run folders unless the user chose another place: ``runs/gui`` under
    the folder the launcher was started from."""
    return Path.cwd() / "runs" / "gui"


def new_run_folder(root, name: str) -> Path:
    """A fresh ``root/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3`` ... when that one exists); not created, so
    every run of a page gets its own folder and a finished run is never refused or overwritten."""
    base = Path(root).expanduser() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, count = base, 1
    while folder.exists():
        count += 1
        folder = base.with_name(f"{base.name}-{count}")
    return folder


def select(combo: QComboBox, wanted: str, default: str) -> None:
    """Choose ``wanted`` in ``combo`` (a remembered setting), else ``default``, else the first item."""
    index = combo.findText(wanted)
    if index < 0:
        index = combo.findText(default)
    combo.setCurrentIndex(max(index, 0))


class Picture(QGroupBox):
    """A titled image of fixed size (the aspect ratio kept) with a selectable caption under it."""

    def __init__(self, title: str, size: int = 200, height: int | None = None):
        super().__init__(title)
        self.size, self.height_px = size, height or size
        self.image = QLabel("-")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setFixedSize(self.size, self.height_px)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.image, 0, Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.caption)

    def show_image(self, pixels: np.ndarray, caption: str = "") -> None:
        picture = pixmap(pixels).scaled(
            self.size,
            self.height_px,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        self.image.setPixmap(picture)
        self.caption.setText(caption)

    def clear(self) -> None:
        self.image.clear()
        self.image.setText("-")
        self.caption.setText("")


class JobPage(QWidget):
    """A page that runs jobs on the launcher's shared worker and reacts only to its own.

    The worker's signals reach every page; this base class keeps track of whether the running job is this
    page's and calls the hooks below only then. A subclass builds its widgets, calls :meth:`start_job`
    and overrides the hooks it needs:

    - ``on_busy(busy, mine)``: any job started (``True``) or ended; enable or disable buttons here;
    - ``on_progress(p)``, ``on_finished(result)``, ``on_failed(message, details)``, ``on_cancelled()``:
      this page's job only; :attr:`job` still names it during the last three, and is None after.

    ``title`` names the page in the launcher; the constructor is ``(worker, settings)``.
    """

    title = ""

    def __init__(self, worker, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.worker = worker
        self.settings = settings
        self._mine = False  # the running job is this page's
        self.job: str | None = None  # its name, for pages that run several kinds of job
        worker.busy.connect(self._busy)
        worker.progress.connect(self._progress)
        worker.finished.connect(self._finished)
        worker.failed.connect(self._failed)
        worker.cancelled.connect(self._cancelled)

    @property
    def running(self) -> bool:
        """This page's job is running."""
        return self._mine

    def is_idle(self) -> bool:
        """Nothing of this page runs or waits to run, and the worker is free (for scripts and tests)."""
        return not self._mine and not self.worker.is_busy

    def start_job(self, fn, *, job: str = "job", **kwargs) -> bool:
        """Run ``fn(progress=..., **kwargs)`` on the worker as this page's job named ``job`` (see
        :attr:`job` in the hooks); ``False`` when another job is running."""
        if self._mine or self.worker.is_busy:  # refused: the running job (ours or not) keeps its state
            return False
        self._mine, self.job = True, job  # before start(): its busy(True) already reaches on_busy as ours
        started = self.worker.start(fn, owner=self.title, **kwargs)
        if not started:
            self._mine, self.job = False, None
        return started  # (a worker that ran the job synchronously has already ended it: _mine is False)

    def busy_message(self) -> str:
        """What to tell the user when a job cannot start because another one runs."""
        owner = getattr(self.worker, "owner", "")
        where = "this page" if owner == self.title else (f"the {owner} page" if owner else "another page")
        return f"Busy: a job of {where} is running. Wait for it to finish, or press Stop there."

    def stop(self) -> None:
        """Ask this page's job to stop (it ends with ``on_cancelled``)."""
        if self._mine:
            self.worker.stop()

    # -- hooks ----------------------------------------------------------------------------------------
    def on_busy(self, busy: bool, mine: bool) -> None:
        pass

    def on_progress(self, p) -> None:
        pass

    def on_finished(self, result) -> None:
        pass

    def on_failed(self, message: str, details: str) -> None:
        pass

    def on_cancelled(self) -> None:
        pass

    # -- the worker's signals -------------------------------------------------------------------------
    def _ended(self) -> None:
        if not self._mine:  # a hook may have started the next job already
            self.job = None

    def _busy(self, busy: bool) -> None:
        self.on_busy(busy, self._mine)

    def _progress(self, p) -> None:
        if self._mine:
            self.on_progress(p)

    def _finished(self, result) -> None:
        if self._mine:
            self._mine = False
            try:
                self.on_finished(result)
            finally:
                self._ended()

    def _failed(self, message: str, details: str) -> None:
        if self._mine:
            self._mine = False
            try:
                self.on_failed(message, details)
            finally:
                self._ended()

    def _cancelled(self) -> None:
        if self._mine:
            self._mine = False
            try:
                self.on_cancelled()
            finally:
                self._ended()
