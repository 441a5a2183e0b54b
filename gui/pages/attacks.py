"""The pixel attacks page: perturb one photo's aligned chip with a zoo attack so verification misses it.

The page builds the attack from advface's public API (``advface.attacks.make_attack``) and runs it on the
shared worker with the "dodge" goal: the adversarial chip against its own clean embedding. On finish it
shows the clean chip, the adversarial chip and the perturbation magnified, with the distances, the
threshold and whether the attack succeeded (on the float image and after rounding to 8 bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from advface.alignment import FaceAligner
from advface.attacks import ATTACKS, AttackResult, Dodge, attack_parameters, make_attack
from advface.attacks.pixel import parse_epsilon
from advface.errors import AdvfaceError
from advface.gui.pages.common import (
    DEFAULT_MODEL,
    IMAGE_FILTER,
    JobPage,
    Picture,
    embedding_model,
    message_label,
    model_choices,
    pixmap,
    select,
    shared_aligner,
)
from advface.images import load_image
from advface.progress import Progress, report

DEFAULT_ATTACK = "pgd"
DEFAULT_EPSILON = "4/255"
DEFAULT_STEPS = 10
MAGNIFY = 10.0
_PHOTO_SIZE = 260


@dataclass(frozen=True)
class AttackRun:
    """One finished attack on one photo's chip (built off the GUI thread)."""

    path: Path
    model: str
    attack: str
    epsilon: float
    steps: int
    clean: np.ndarray  # (S, S, 3) float32 chip
    result: AttackResult
    threshold: float

    @property
    def adversarial(self) -> np.ndarray:
        return self.result.images[0]

    @property
    def perturbation(self) -> np.ndarray:
        """The change magnified around mid-grey: ``0.5 + MAGNIFY * (adv - clean)``, clipped to [0, 1]."""
        return np.clip(0.5 + MAGNIFY * (self.adversarial - self.clean), 0.0, 1.0).astype(np.float32)

    @property
    def clean_distance(self) -> float:
        return float(self.result.clean_scores[0])

    @property
    def distance(self) -> float:
        return float(self.result.scores[0])

    @property
    def success(self) -> bool:
        return bool(self.result.success[0])

    @property
    def success_8bit(self) -> bool:
        return bool(self.result.success_8bit[0])


def attack_settings(attack: str, epsilon: float, steps: int) -> dict:
    """Keyword settings for ``make_attack``: ``steps`` goes to ``steps`` or ``queries`` (Square), when the
    attack takes one."""
    accepted = attack_parameters(attack)
    settings: dict = {"epsilon": epsilon}
    if "steps" in accepted:
        settings["steps"] = steps
    elif "queries" in accepted:
        settings["queries"] = steps
    return settings


def run_attack(
    *, path, model: str, attack: str, epsilon: float, steps: int, aligner: FaceAligner, progress=None
) -> AttackRun:
    """Align the largest face of ``path`` for ``model`` and attack it (goal: dodge its clean embedding)."""
    # 1. Model and attack first: a bad setting fails before the slow parts.
    face_model = embedding_model(model)
    attacker = make_attack(attack, **attack_settings(attack, epsilon, steps))
    # 2. The chip and its clean embedding.
    report(progress, 0, None, "align")
    chip = aligner.align_one(load_image(path), face_model.template, source=Path(path).name).chip
    chips = chip[None].astype(np.float32)
    goal = Dodge(face_model.embed(chips), paired=True)
    # 3. The attack (its progress callback raises Cancelled after Stop).
    result = attacker(face_model, chips, goal, seed=0, progress=progress)
    return AttackRun(
        path=Path(path),
        model=model,
        attack=attack,
        epsilon=float(epsilon),
        steps=int(steps),
        clean=chips[0],
        result=result,
        threshold=float(face_model.spec.threshold),
    )


class AttackPage(JobPage):
    """Run a pixel attack (FGSM, BIM, PGD, ...) on one photo's face and show what it changed."""

    title = "Pixel attacks"

    def __init__(self, worker, settings: QSettings, parent: QWidget | None = None):
        super().__init__(worker, settings, parent)
        self.aligner = shared_aligner()
        self.path: Path | None = None
        self.last_run: AttackRun | None = None

        # 1. The photo.
        self.open_button = QPushButton("Open image...")
        self.open_button.clicked.connect(self._browse_image)
        self.photo = QLabel("No image")
        self.photo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.photo.setFixedSize(_PHOTO_SIZE, _PHOTO_SIZE)
        self.photo_caption = QLabel("")

        # 2. The settings.
        self.model_combo = QComboBox()
        self.model_combo.addItems(model_choices())
        select(self.model_combo, str(settings.value("attacks/model", DEFAULT_MODEL)), DEFAULT_MODEL)
        self.attack_combo = QComboBox()
        self.attack_combo.addItems(list(ATTACKS))
        select(self.attack_combo, str(settings.value("attacks/attack", DEFAULT_ATTACK)), DEFAULT_ATTACK)
        self.epsilon_edit = QLineEdit(str(settings.value("attacks/epsilon", DEFAULT_EPSILON)))
        self.epsilon_edit.setToolTip("A number or a fraction of the pixel range, e.g. 4/255")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(int(settings.value("attacks/steps", DEFAULT_STEPS)))
        self.steps_spin.setToolTip("Optimisation steps (queries for Square; FGSM takes one step)")
        self.goal_label = QLabel("dodge: move away from its own clean embedding")

        # 3. Run, stop, progress.
        self.run_button = QPushButton("Attack")
        self.run_button.clicked.connect(lambda: self.run_attack())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)

        # 4. The results.
        self.clean_view = Picture("Clean chip")
        self.adv_view = Picture("Adversarial chip")
        self.delta_view = Picture(f"Perturbation x{MAGNIFY:g}")
        self.verdict = QLabel("Open a photo and press Attack.")
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = message_label()

        self._layout()

    def _layout(self) -> None:
        photo_box = QGroupBox("Photo")
        photo = QVBoxLayout(photo_box)
        photo.addWidget(self.open_button)
        photo.addWidget(self.photo, 0, Qt.AlignmentFlag.AlignCenter)
        photo.addWidget(self.photo_caption)

        settings_box = QGroupBox("Attack")
        grid = QGridLayout(settings_box)
        rows = (
            ("Model:", self.model_combo),
            ("Attack:", self.attack_combo),
            ("Epsilon (Linf):", self.epsilon_edit),
            ("Steps:", self.steps_spin),
            ("Goal:", self.goal_label),
        )
        for row, (label, widget) in enumerate(rows):
            grid.addWidget(QLabel(label), row, 0)
            grid.addWidget(widget, row, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        grid.addLayout(buttons, len(rows), 0, 1, 2)
        grid.addWidget(self.progress_bar, len(rows) + 1, 0, 1, 2)
        grid.setRowStretch(len(rows) + 2, 1)

        top = QHBoxLayout()
        top.addWidget(photo_box)
        top.addWidget(settings_box, 1)

        results = QHBoxLayout()
        for view in (self.clean_view, self.adv_view, self.delta_view):
            results.addWidget(view)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(results)
        layout.addWidget(self.verdict)
        layout.addWidget(self.message)
        layout.addStretch(1)

    # -- actions ------------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.model_combo.currentText()

    @property
    def attack_name(self) -> str:
        return self.attack_combo.currentText()

    def _browse_image(self) -> None:
        start = str(self.settings.value("attacks/folder", ""))
        path, _ = QFileDialog.getOpenFileName(self, "Open image", start, IMAGE_FILTER)
        if path:
            self.settings.setValue("attacks/folder", str(Path(path).parent))
            self.open_image(path)

    def open_image(self, path) -> bool:
        """Show the photo ``path``; its face is found and aligned when the attack runs."""
        self._show_message("")
        try:
            image = load_image(path)
        except AdvfaceError as exc:
            self._show_message(str(exc).splitlines()[0])
            return False
        self.path = Path(path)
        h, w = image.shape[:2]
        scale = min(_PHOTO_SIZE / w, _PHOTO_SIZE / h)
        picture = pixmap(image).scaled(
            max(1, round(w * scale)),
            max(1, round(h * scale)),
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        self.photo.setPixmap(picture)
        self.photo_caption.setText(f"{self.path.name} ({w}x{h})")
        return True

    def run_attack(
        self,
        *,
        attack: str | None = None,
        epsilon: str | None = None,
        steps: int | None = None,
        model: str | None = None,
    ) -> bool:
        """Start the attack with the page's settings (arguments fill them in first); ``False`` with a
        message when a setting is wrong or the worker is busy."""
        if attack is not None:
            self.attack_combo.setCurrentText(attack)
        if epsilon is not None:
            self.epsilon_edit.setText(epsilon)
        if steps is not None:
            self.steps_spin.setValue(steps)
        if model is not None:
            self.model_combo.setCurrentText(model)
        self._show_message("")
        if self.path is None:
            self._show_message("Open a photo first.")
            return False
        try:
            eps = parse_epsilon(self.epsilon_edit.text().strip())
        except AdvfaceError as exc:
            self._show_message(str(exc))
            return False
        if not 0 < eps <= 1:
            self._show_message(
                f"Epsilon must be in (0, 1] of the pixel range, e.g. 4/255. Received: "
                f"{self.epsilon_edit.text().strip()!r}."
            )
            return False
        for key, value in (
            ("model", self.model_name),
            ("attack", self.attack_name),
            ("epsilon", self.epsilon_edit.text().strip()),
            ("steps", self.steps_spin.value()),
        ):
            self.settings.setValue(f"attacks/{key}", value)
        started = self.start_job(
            run_attack,
            path=self.path,
            model=self.model_name,
            attack=self.attack_name,
            epsilon=eps,
            steps=self.steps_spin.value(),
            aligner=self.aligner,
        )
        if not started:
            self._show_message(self.busy_message())
            return False
        self.progress_bar.setRange(0, 0)
        self.verdict.setText(f"Running {self.attack_name} on {self.path.name} ...")
        return True

    # -- results ------------------------------------------------------------------------------------

    def on_progress(self, p: Progress) -> None:
        if p.total:
            self.progress_bar.setRange(0, p.total)
            self.progress_bar.setValue(min(p.step, p.total))
        else:
            self.progress_bar.setRange(0, 0)

    def on_finished(self, run: object) -> None:
        if not isinstance(run, AttackRun):
            return
        self.last_run = run
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        result = run.result
        self.clean_view.show_image(run.clean, f"distance {run.clean_distance:.4f}")
        self.adv_view.show_image(
            run.adversarial,
            f"distance {run.distance:.4f}\nLinf {result.linf[0] * 255:.2f}/255, L2 {result.l2[0]:.3f}",
        )
        self.delta_view.show_image(run.perturbation, f"0.5 + {MAGNIFY:g} x (adversarial - clean)")
        outcome = "success" if run.success else "failed"
        rounded = "success" if run.success_8bit else "failed"
        self.verdict.setText(
            f"{result.attack} ({run.model}, epsilon {run.epsilon * 255:.3g}/255, {run.steps} steps, dodge): "
            f"{outcome}; after 8-bit rounding: {rounded}. Distance to the clean embedding "
            f"{run.clean_distance:.4f} -> {run.distance:.4f} (threshold {run.threshold:g}) "
            f"in {result.seconds:.1f} s."
        )
        self.verdict.setStyleSheet(f"color: {'#1e7e34' if run.success else '#b00020'}; font-weight: bold;")

    def on_failed(self, message: str, details: str = "") -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.verdict.setText("Attack failed.")
        self.verdict.setStyleSheet("")
        self._show_message(message)

    def on_cancelled(self) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.verdict.setText("Stopped.")
        self.verdict.setStyleSheet("")
        self._show_message("Stopped.")

    def on_busy(self, busy: bool, mine: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.open_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy and mine)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
