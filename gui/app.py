"""The desktop launcher: a list of pages on the left, the chosen page on the right, one worker for all.

Every page is a ``QWidget`` with a class attribute ``title`` and the constructor ``(worker, settings)``;
:data:`PAGES` lists them in launcher order. Pages run advface's long calls on the shared
:class:`~advface.gui.worker.Worker` (one job at a time); the window shows its state in the status bar and
an error dialog when a job fails. ``QSettings("advface", "advface")`` keeps the window's geometry and
the last page.

Run it with ``advface gui`` or ``advface-gui``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from advface.errors import AdvfaceError
from advface.gui.pages.common import JobPage
from advface.gui.worker import Worker
from advface.progress import Progress, ProgressCallback, report

CLOSE_WAIT_MS = 3000  # how long closing the window waits for a stopped job before it waits in the background
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "samples" / "obama.jpg"


@dataclass(frozen=True)
class SelfCheck:
    """What the home page's self-check found: a real photo aligned and embedded by a zoo model."""

    model: str
    image: Path
    dimensions: int
    norm: float
    seconds: float


def self_check(*, progress: ProgressCallback, image: Path = SAMPLE, model: str = "dlib-resnet") -> SelfCheck:
    """Load ``image``, align its face and embed it with the zoo model ``model``, one progress step each."""
    from advface.alignment import FaceAligner
    from advface.images import load_image
    from advface.zoo import load_model

    start = time.perf_counter()
    total = 4
    image = Path(image)
    if not image.is_file():
        raise AdvfaceError(
            f"The self-check needs a sample face. Received: image={str(image)!r} (no such file). "
            "Run `make samples` to fetch the sample photos."
        )
    # 1. The photo.
    report(progress, 0, total, "self-check", task="load image")
    photo = load_image(image)
    # 2. The face model (built and cached by the zoo).
    report(progress, 1, total, "self-check", task="load model")
    face_model = load_model(model)
    # 3. The face, aligned for the model's template.
    report(progress, 2, total, "self-check", task="align")
    faces = FaceAligner().align(photo, face_model.spec.template)
    if not faces:
        raise AdvfaceError(f"No face found in the self-check photo. Received: image={str(image)!r}.")
    # 4. Its embedding.
    report(progress, 3, total, "self-check", task="embed")
    embedding = face_model.embed(faces[0].chip[None])[0]
    report(progress, 4, total, "self-check", task="done")
    return SelfCheck(
        model=model,
        image=image,
        dimensions=int(embedding.shape[-1]),
        norm=float(np.linalg.norm(embedding)),
        seconds=time.perf_counter() - start,
    )


class HomePage(JobPage):
    """What the launcher holds, and a self-check that runs a real (small) job on the worker."""

    title = "Home"

    def __init__(self, worker: Worker, settings: QSettings):
        super().__init__(worker, settings)

        intro = QLabel(
            "<h2>advface</h2>"
            "<p>Assess how face recognition fails under attack, offline.</p>"
            "<p><b>Face recognition</b> (in the list on the left): open two photos, see the detected faces, "
            "landmarks and aligned chips, verify them (1:1) or identify one against a gallery folder (1:N) "
            "with any zoo model.</p>"
            "<p><b>Pixel attacks</b>: run FGSM, BIM, PGD, MI-FGSM, APGD or Square on a photo's aligned face "
            "and see the clean chip, the adversarial chip and the magnified perturbation with their "
            "distances.</p>"
            "<p><b>Eyeglasses</b>: sample frames from the shipped eyeglass generator, move latent sliders "
            "and try a frame on a face.</p>"
            "<p><b>Dodging</b> and <b>Impersonation</b>: fine-tune the eyeglass generator (AGN) until the "
            "frames it draws make a model miss a person, or take them for someone else; live curves, the "
            "best frame and the photos wearing it, a run folder with printable frames.</p>"
            "<p><b>Physical test</b>: print the frames with their marks, then check a camera or a video "
            "frame by frame: face box, landmarks, marks, the decision and the share of frames fooled, "
            "recorded to a run folder.</p>"
            "<p><b>Semantic robustness</b>: browse generated identities, move attribute sliders within "
            "their budgets and watch the distance, run latent PGD, FAB-t and certificates, and rank the "
            "attributes.</p>"
            "<p>The self-check aligns a sample face and embeds it with the dlib ResNet model.</p>"
        )
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.RichText)

        self.run_button = QPushButton("Run self-check")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.result_label)
        layout.addStretch(1)

        self.run_button.clicked.connect(self.run_self_check)
        self.stop_button.clicked.connect(self.stop)

    def run_self_check(self) -> bool:
        """Start the self-check; ``False`` when the worker is busy with another job."""
        started = self.start_job(self_check)
        if started:
            self.result_label.setText("Running the self-check ...")
        return started

    def on_busy(self, busy: bool, mine: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy and mine)

    def on_progress(self, p: Progress) -> None:
        self.progress_bar.setRange(0, p.total or 0)
        self.progress_bar.setValue(p.step)
        task = p.metrics.get("task")
        if task:
            self.result_label.setText(f"Self-check: {task} ...")

    def on_finished(self, result: object) -> None:
        self.result_label.setText(
            f"Self-check passed: {result.model} embedded {result.image.name} into {result.dimensions} "
            f"dimensions (norm {result.norm:.3f}) in {result.seconds:.1f} s."
        )

    def on_failed(self, message: str, details: str) -> None:
        self.result_label.setText(f"Self-check failed: {message}")

    def on_cancelled(self) -> None:
        self.result_label.setText("Self-check stopped.")


# The launcher's pages, in order (a class each: QWidget subclass, ``title``, constructor (worker, settings)).


def _pages() -> list[type[QWidget]]:
    from advface.gui.pages.attacks import AttackPage
    from advface.gui.pages.eyeglasses import EyeglassesPage
    from advface.gui.pages.glasses_attack import DodgingPage, ImpersonationPage
    from advface.gui.pages.physical import PhysicalPage
    from advface.gui.pages.recognition import RecognitionPage
    from advface.gui.pages.semantic import SemanticPage

    return [
        HomePage,
        RecognitionPage,
        EyeglassesPage,
        DodgingPage,
        ImpersonationPage,
        PhysicalPage,
        AttackPage,
        SemanticPage,
    ]


PAGES: list[type[QWidget]] = _pages()


class MainWindow(QMainWindow):
    """The launcher (see the module docstring).

    Args:
        settings: where geometry and the last page are kept (default ``QSettings("advface", "advface")``).
        pages: page classes to show (default :data:`PAGES`).
    """

    def __init__(self, settings: QSettings | None = None, pages: list[type[QWidget]] | None = None):
        super().__init__()
        self.setWindowTitle("advface")
        self.settings = settings if settings is not None else QSettings("advface", "advface")
        self.worker = Worker(self)
        self.error_box: QMessageBox | None = None

        # 1. The launcher list and the stack of pages.
        self.launcher = QListWidget()
        self.stack = QStackedWidget()
        self.pages: list[QWidget] = []
        for cls in pages if pages is not None else PAGES:
            page = cls(self.worker, self.settings)
            self.pages.append(page)
            self.stack.addWidget(page)
            self.launcher.addItem(cls.title)
        self.launcher.setFixedWidth(max(160, self.launcher.sizeHintForColumn(0) + 24))
        self.launcher.currentRowChanged.connect(self.stack.setCurrentIndex)
        splitter = QSplitter()
        splitter.addWidget(self.launcher)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 1)
        self.setCentralWidget(splitter)

        # 2. The worker's state in the status bar, and failures in a dialog.
        self.state = QLabel("Ready")
        self.statusBar().addWidget(self.state, 1)
        self.worker.busy.connect(lambda busy: busy and self.state.setText("Working ..."))
        self.worker.progress.connect(self._on_progress)
        self.worker.finished.connect(lambda _: self.state.setText("Ready (last job finished)"))
        self.worker.cancelled.connect(lambda: self.state.setText("Ready (last job stopped)"))
        self.worker.failed.connect(self.show_error)
        self._closing = False  # the window waits for a job to stop before it closes
        self.worker.busy.connect(self._closed_job)

        # 3. Geometry and the last page from the settings.
        geometry = self.settings.value("geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(900, 600)
        titles = [type(p).title for p in self.pages]
        last = self.settings.value("page", "")
        self.launcher.setCurrentRow(titles.index(last) if last in titles else 0)

    @property
    def current_page(self) -> QWidget:
        return self.stack.currentWidget()

    def _on_progress(self, p: Progress) -> None:
        total = f"/{p.total}" if p.total else ""
        self.state.setText(f"Working: {p.stage} {p.step}{total}".replace("  ", " "))

    def show_error(self, message: str, details: str) -> QMessageBox:
        """A non-blocking error dialog: the one-line message, the details behind "Show Details..."."""
        self.state.setText("Ready (last job failed)")
        box = QMessageBox(QMessageBox.Icon.Critical, "advface", message, QMessageBox.StandardButton.Ok, self)
        box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _: setattr(self, "error_box", None))
        self.error_box = box
        box.open()
        return box

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("page", type(self.current_page).title)
        self.settings.sync()
        # Stop the running job; one whose step outlasts the wait keeps the window open until it ends
        # (quitting under a running TensorFlow thread could crash, and a check would lose its summary).
        if not self.worker.shutdown(CLOSE_WAIT_MS):
            event.ignore()
            self._closing = True
            self.state.setText("Stopping the running job: the window closes when it has stopped ...")
            return
        super().closeEvent(event)

    def _closed_job(self, busy: bool) -> None:
        if not busy and self._closing:
            self._closing = False
            self.close()


def main(argv: list[str] | None = None) -> int:
    """Open the launcher and run the Qt event loop until the window closes (the exit status)."""
    argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("advface")
    window = MainWindow()
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
