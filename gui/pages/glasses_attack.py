"""The adversarial eyeglasses pages: dodging (be missed) and impersonation (be taken for someone else).

Both pages run AGN (:class:`~advface.attacks.eyeglasses.EyeglassAttack`, Sharif et al., ACM TOPS 2019)
through the same job the CLI runs, :func:`advface.glasses.workflow.run_attack`, on the launcher's shared
worker. Every run writes a fresh run folder ``<runs root>/<goal>-<YYYYmmdd-HHMMSS>`` (config.json,
steps.tsv, results.tsv, glasses.png, glasses-print.pdf, photos/, objectives.png, summary.json), so a
finished run is never refused.

While the attack runs, each step adds its goal loss, realism (the discriminator's belief that the frames
are real) and best share of photos fooled to a live plot; after each success check the page shows the
best frame so far and every attacker photo wearing it with its distance and whether it fools the model.
On finish it shows the final frame, the photos wearing it and their distances before and after, and the
verdict from the run's summary, with buttons that open the run folder and the printable frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from advface.attacks.eyeglasses import EyeglassAttack
from advface.errors import AdvfaceError
from advface.glasses.workflow import AttackRun, run_attack
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
from advface.gui.pages.plots import CurvePlot
from advface.progress import Progress

DEFAULTS = {
    "steps": 300,
    "kappa": 0.25,
    "learning_rate": 5e-4,
    "batch_size": 16,
    "check_every": 5,
    "check_samples": 16,
    "success_fraction": 1.0,
    "seed": 0,
}
"""The hyperparameters' defaults (EyeglassAttack's own, seed 0)."""

CURVES = (("goal_loss", "#d62728"), ("realism", "#1f77b4"), ("best_fraction", "#2ca02c"))
_THUMB = 64
_WORN = 150


def glasses_job(
    *, out, model: str, images, goal: str, target, attack: EyeglassAttack, seed: int, aligner, progress=None
) -> AttackRun:
    """Load the embedding model and run the eyeglass attack into ``out`` (off the GUI thread)."""
    face_model = embedding_model(model)
    return run_attack(
        out,
        model=face_model,
        images=[str(p) for p in images],
        goal=goal,
        attack=attack,
        target=[str(p) for p in target] if target else None,
        seed=seed,
        aligner=aligner,
        progress=progress,
    )


class PhotoList(QGroupBox):
    """A titled list of photos (thumbnails and names) with Add..., Remove and Clear."""

    def __init__(self, title: str, settings: QSettings, key: str, parent: QWidget | None = None):
        super().__init__(title, parent)
        self.settings, self.key = settings, key
        self.list = QListWidget()
        self.list.setIconSize(QSize(_THUMB, _THUMB))
        self.list.setMinimumWidth(220)
        self.list.setMaximumHeight(170)
        self.add_button = QPushButton("Add...")
        self.add_button.clicked.connect(self._browse)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove_selected)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.list.clear)
        buttons = QHBoxLayout()
        for button in (self.add_button, self.remove_button, self.clear_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addLayout(buttons)

    @property
    def paths(self) -> list[Path]:
        return [Path(self.list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.list.count())]

    def add(self, paths) -> list[str]:
        """Add the photos that exist; the names of those that do not (or cannot be read) are returned."""
        missing = []
        for path in paths:
            path = Path(path)
            picture = QPixmap(str(path)) if path.is_file() else QPixmap()
            if picture.isNull():
                missing.append(str(path))
                continue
            icon = QIcon(picture.scaled(_THUMB, _THUMB, Qt.AspectRatioMode.KeepAspectRatio))
            item = QListWidgetItem(icon, path.name)
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(str(path))
            self.list.addItem(item)
        return missing

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))

    def set_enabled(self, enabled: bool) -> None:
        for widget in (self.add_button, self.remove_button, self.clear_button):
            widget.setEnabled(enabled)

    def _browse(self) -> None:
        start = str(self.settings.value(f"{self.key}/folder", ""))
        paths, _ = QFileDialog.getOpenFileNames(self, self.title(), start, IMAGE_FILTER)
        if paths:
            self.settings.setValue(f"{self.key}/folder", str(Path(paths[0]).parent))
            self.add(paths)


class GlassesAttackPage(JobPage):
    """Run the AGN eyeglass attack for one goal and show it live (see the module docstring).

    Subclasses set ``title``, ``goal`` (``"dodge"`` or ``"impersonate"``) and ``key`` (the settings
    prefix and the run folders' name).
    """

    title = ""
    goal = "dodge"
    key = "glasses"
    needs_target = False
    intro = ""

    def __init__(self, worker, settings: QSettings, parent: QWidget | None = None):
        super().__init__(worker, settings, parent)
        self.aligner = shared_aligner()
        self.last_run: AttackRun | None = None
        self.run_folder: Path | None = None  # the folder of the running or last run
        self.last_step = 0
        self._running_photos: list[Path] = []

        # 1. The photos.
        self.photos = PhotoList("Attacker's photos", settings, f"{self.key}/photos")
        self.targets = (
            PhotoList("Target's photos", settings, f"{self.key}/targets") if self.needs_target else None
        )

        # 2. Model and hyperparameters (remembered under "<key>/<name>").
        self.model_combo = QComboBox()
        self.model_combo.addItems(model_choices())
        select(self.model_combo, str(settings.value(f"{self.key}/model", DEFAULT_MODEL)), DEFAULT_MODEL)
        self.spins: dict[str, QSpinBox | QDoubleSpinBox] = {
            "steps": self._int_spin(1, 100_000, "Most attack steps (it stops at the first success check)"),
            "kappa": self._float_spin(
                0.0, 1.0, 0.05, 2, "Weight of realism against the goal (0: only the goal)"
            ),
            "learning_rate": self._float_spin(1e-6, 1.0, 1e-4, 6, "Adam learning rate of the generator"),
            "batch_size": self._int_spin(1, 512, "Frames per step, each worn on one photo"),
            "check_every": self._int_spin(1, 100_000, "Steps between success checks"),
            "check_samples": self._int_spin(1, 512, "Fresh frames judged at each check"),
            "success_fraction": self._float_spin(
                0.05, 1.0, 0.05, 2, "Share of the photos one frame must fool (1: all of them)"
            ),
            "seed": self._int_spin(0, 2**31 - 1, "Seeds the latents, the batches and the real frames"),
        }
        for name, spin in self.spins.items():
            spin.setValue(self._remembered(name))
        self.runs_root_edit = QLineEdit(
            str(settings.value(f"{self.key}/runs_root", str(default_runs_root())))
        )
        self.runs_root_edit.setToolTip("Each run writes a new folder <goal>-<date>-<time> in here")
        self.runs_root_button = QPushButton("Browse...")
        self.runs_root_button.clicked.connect(self._browse_runs_root)

        # 3. Start, stop, progress.
        self.run_button = QPushButton("Start")
        self.run_button.clicked.connect(lambda: self.start_attack())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)

        # 4. Live views and results.
        self.plot = CurvePlot(CURVES, title="Objectives", x_label="step")
        self.glasses_view = Picture("Best frame so far", size=264, height=96)
        self.worn_box = QWidget()
        self.worn_layout = QHBoxLayout(self.worn_box)
        self.worn_views: list[Picture] = []
        self.verdict = QLabel(self.intro)
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder_label = QLabel("")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_folder_button = QPushButton("Open run folder")
        self.open_folder_button.setEnabled(False)
        self.open_folder_button.clicked.connect(self.open_run_folder)
        self.open_print_button = QPushButton("Open printable frames")
        self.open_print_button.setEnabled(False)
        self.open_print_button.clicked.connect(self.open_printable_frames)
        self.message = message_label()

        self._layout()

    def _int_spin(self, low: int, high: int, tip: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setToolTip(tip)
        return spin

    def _float_spin(self, low: float, high: float, step: float, decimals: int, tip: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setDecimals(decimals)
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setToolTip(tip)
        return spin

    def _remembered(self, name: str):
        """The setting ``<key>/<name>`` as the default's type (the default when it is unreadable)."""
        default = DEFAULTS[name]
        try:
            return type(default)(self.settings.value(f"{self.key}/{name}", default))
        except (TypeError, ValueError):
            return default

    def _layout(self) -> None:
        photos = QVBoxLayout()
        photos.addWidget(self.photos)
        if self.targets is not None:
            photos.addWidget(self.targets)
        photos.addStretch(1)

        settings_box = QGroupBox("Attack (AGN eyeglasses)")
        grid = QGridLayout(settings_box)
        grid.addWidget(QLabel("Model:"), 0, 0)
        grid.addWidget(self.model_combo, 0, 1, 1, 3)
        labels = {
            "steps": "Steps:",
            "kappa": "Kappa:",
            "learning_rate": "Learning rate:",
            "batch_size": "Batch size:",
            "check_every": "Check every:",
            "check_samples": "Check samples:",
            "success_fraction": "Success fraction:",
            "seed": "Seed:",
        }
        for i, (name, spin) in enumerate(self.spins.items()):
            row, column = 1 + i // 2, 2 * (i % 2)
            grid.addWidget(QLabel(labels[name]), row, column)
            grid.addWidget(spin, row, column + 1)
        row = 1 + (len(self.spins) + 1) // 2
        grid.addWidget(QLabel("Runs folder:"), row, 0)
        grid.addWidget(self.runs_root_edit, row, 1, 1, 2)
        grid.addWidget(self.runs_root_button, row, 3)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.progress_bar, 1)
        grid.addLayout(buttons, row + 1, 0, 1, 4)
        grid.setRowStretch(row + 2, 1)

        top = QHBoxLayout()
        top.addLayout(photos)
        top.addWidget(settings_box, 1)

        live = QHBoxLayout()
        live.addWidget(self.plot, 1)
        live.addWidget(self.glasses_view, 0, Qt.AlignmentFlag.AlignTop)

        worn = QGroupBox("The attacker wearing the best frame")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.worn_box)
        scroll.setMinimumHeight(_WORN + 90)
        QVBoxLayout(worn).addWidget(scroll)

        folder = QHBoxLayout()
        folder.addWidget(self.folder_label, 1)
        folder.addWidget(self.open_folder_button)
        folder.addWidget(self.open_print_button)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(live, 1)
        layout.addWidget(worn)
        layout.addWidget(self.verdict)
        layout.addLayout(folder)
        layout.addWidget(self.message)

    # -- inputs -------------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.model_combo.currentText()

    @property
    def print_file(self) -> Path | None:
        """The printable frames (PDF) of the last finished run."""
        return self.last_run.out / "glasses-print.pdf" if self.last_run else None

    def add_photos(self, paths) -> bool:
        """Add the attacker's photos; ``False`` with a message when one is not a readable image."""
        return self._added(self.photos.add(paths))

    def add_targets(self, paths) -> bool:
        """Add photos of the person to impersonate (impersonation only)."""
        if self.targets is None:
            raise AdvfaceError(f"The {self.title} page takes no target photos. Received: {list(paths)}.")
        return self._added(self.targets.add(paths))

    def _added(self, missing: list[str]) -> bool:
        self._show_message(f"Not a readable image: {', '.join(missing)}." if missing else "")
        return not missing

    def _browse_runs_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Runs folder", self.runs_root_edit.text())
        if folder:
            self.runs_root_edit.setText(folder)

    def settings_values(self) -> dict:
        """The hyperparameters as the widgets hold them."""
        return {name: spin.value() for name, spin in self.spins.items()}

    # -- start and stop -----------------------------------------------------------------------------

    def start_attack(self, *, out=None, model: str | None = None, runs_root=None, **overrides) -> bool:
        """Start the attack with the page's settings (keyword arguments fill in the widgets first: any of
        :data:`DEFAULTS`, ``model``, ``runs_root``; ``out`` names the run folder instead of a new one under
        the runs root). ``False``, with a message and nothing started, on a missing input, a wrong
        setting or a busy worker."""
        unknown = sorted(set(overrides) - set(DEFAULTS))
        if unknown:
            raise AdvfaceError(
                f"Unknown settings. Received: {', '.join(unknown)}. Known: {', '.join(DEFAULTS)}."
            )
        for name, value in overrides.items():
            self.spins[name].setValue(value)
        if model is not None:
            self.model_combo.setCurrentText(model)
        if runs_root is not None:
            self.runs_root_edit.setText(str(runs_root))
        self._show_message("")
        # 1. Inputs first: nothing starts without the attacker's (and the target's) photos.
        images = self.photos.paths
        if not images:
            self._show_message("Add at least one photo of the attacker first (Add...).")
            return False
        target = self.targets.paths if self.targets is not None else None
        if self.targets is not None and not target:
            self._show_message("Impersonation needs photos of the target: add them under Target's photos.")
            return False
        # 2. The attack (its constructor checks the hyperparameters).
        values = self.settings_values()
        seed = int(values.pop("seed"))
        try:
            attack = EyeglassAttack(
                **{k: int(v) if isinstance(v, int) else float(v) for k, v in values.items()}
            )
        except AdvfaceError as exc:
            self._show_message(str(exc).splitlines()[0])
            return False
        root = Path(self.runs_root_edit.text().strip() or default_runs_root()).expanduser()
        folder = Path(out) if out is not None else new_run_folder(root, self.goal)
        # 3. Remember the settings, reset the views, start.
        for name, value in self.settings_values().items():
            self.settings.setValue(f"{self.key}/{name}", value)
        self.settings.setValue(f"{self.key}/model", self.model_name)
        self.settings.setValue(f"{self.key}/runs_root", str(root))
        started = self.start_job(
            glasses_job,
            out=folder,
            model=self.model_name,
            images=images,
            goal=self.goal,
            target=target,
            attack=attack,
            seed=seed,
            aligner=self.aligner,
        )
        if not started:
            self._show_message(self.busy_message())
            return False
        self.last_run = None
        self.run_folder = folder
        self.last_step = 0
        self._reset_views(images)
        self.progress_bar.setRange(0, attack.steps)
        self.progress_bar.setValue(0)
        self.verdict.setStyleSheet("")
        self.verdict.setText(
            f"Aligning {len(images)} photo(s) and starting the attack ({attack.steps} steps at most) ..."
        )
        self.folder_label.setText(f"Run folder: {folder}")
        self.open_folder_button.setEnabled(False)
        self.open_print_button.setEnabled(False)
        return True

    def _reset_views(self, images: list[Path]) -> None:
        self.plot.clear()
        self.glasses_view.clear()
        for view in self.worn_views:
            self.worn_layout.removeWidget(view)
            view.deleteLater()
        self.worn_views = [Picture(Path(p).name, size=_WORN) for p in images]
        for view in self.worn_views:
            self.worn_layout.addWidget(view)
        self._running_photos = list(images)

    def open_run_folder(self) -> bool:
        return bool(self.run_folder) and QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.run_folder)))

    def open_printable_frames(self) -> bool:
        return bool(self.print_file) and QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.print_file)))

    # -- live views ---------------------------------------------------------------------------------

    def on_progress(self, p: Progress) -> None:
        if p.stage != "eyeglasses":
            return
        self.last_step = p.step
        if p.total:
            self.progress_bar.setRange(0, p.total)
            self.progress_bar.setValue(min(p.step, p.total))
        m = p.metrics
        for name, _ in CURVES:
            if name in m:
                self.plot.add_point(name, p.step, m[name])
        if "glasses" in m and m["glasses"] is not None:
            self.glasses_view.show_image(
                np.asarray(m["glasses"]), f"step {p.step}: fools {m['best_fraction']:.0%} of the photos"
            )
        if "worn" in m and m["worn"] is not None:
            self._show_worn(m["worn"], m["scores"], m["fooled"])
        nan = float("nan")
        self.verdict.setText(
            f"Step {p.step}/{p.total}: goal loss {m.get('goal_loss', nan):.4f}, realism "
            f"{m.get('realism', nan):.3f}, best frame fools {m.get('best_fraction', 0.0):.0%} of the photos."
        )

    def _show_worn(self, worn, scores, fooled, before=None) -> None:
        for i, view in enumerate(self.worn_views[: len(worn)]):
            change = f"{before[i]:.4f} -> " if before is not None else ""
            view.show_image(
                np.asarray(worn[i]),
                f"distance {change}{float(scores[i]):.4f}\n{'fooled' if fooled[i] else 'not fooled'}",
            )

    # -- the end of a run ---------------------------------------------------------------------------

    def on_finished(self, run: object) -> None:
        if not isinstance(run, AttackRun):
            return
        self.last_run = run
        self.run_folder = run.out
        s, result = run.summary, run.result
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self.glasses_view.show_image(result.glasses, "final frame (glasses.png)")
        score = s["score"]
        rows = s["photos"]
        self._show_worn(
            result.images,
            [r[f"{score}_after"] for r in rows],
            [r["fooled"] for r in rows],
            before=[r[f"{score}_before"] for r in rows],
        )
        fooled = sum(bool(r["fooled"]) for r in rows)
        threshold = f", threshold {s['threshold']:g}" if s["threshold"] is not None else ""
        self.verdict.setText(
            f"{self.title} ({s['target']}) on {s['model']}: {'success' if s['success'] else 'not reached'} "
            f"after {s['steps']} steps in {s['seconds']} s{threshold}; {fooled} of {len(rows)} photos fooled."
        )
        self.verdict.setStyleSheet(f"color: {'#1e7e34' if s['success'] else '#b00020'}; font-weight: bold;")
        self.folder_label.setText(f"Run folder: {run.out}")
        self.open_folder_button.setEnabled(True)
        self.open_print_button.setEnabled((run.out / "glasses-print.pdf").is_file())
        self._show_message("")

    def on_failed(self, message: str, details: str = "") -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.verdict.setText("The attack failed.")
        self.verdict.setStyleSheet("")
        self._show_message(message)

    def on_cancelled(self) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.verdict.setText(f"Stopped after {self.last_step} steps.")
        self.verdict.setStyleSheet("")
        kept = self.run_folder is not None and (self.run_folder / "steps.tsv").is_file()
        if kept:
            self._show_message(
                f"Stopped after {self.last_step} steps; the partial run folder {self.run_folder} keeps "
                f"config.json and steps.tsv."
            )
        else:
            self._show_message(f"Stopped after {self.last_step} steps (before the attack wrote anything).")
        self.open_folder_button.setEnabled(kept)

    def on_busy(self, busy: bool, mine: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy and mine)
        for photos in (self.photos, self.targets):
            if photos is not None:
                photos.set_enabled(not busy)
        for widget in (self.model_combo, self.runs_root_edit, self.runs_root_button, *self.spins.values()):
            widget.setEnabled(not busy)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)


class DodgingPage(GlassesAttackPage):
    """Eyeglasses that make the model miss the attacker: every photo far from the attacker's own face."""

    title = "Dodging"
    goal = "dodge"
    key = "dodging"
    intro = (
        "Dodging: add photos of the attacker and press Start. AGN fine-tunes an eyeglass generator until "
        "one frame, worn on every photo, puts each of them farther than the threshold from the attacker's "
        "own (clean) embedding."
    )


class ImpersonationPage(GlassesAttackPage):
    """Eyeglasses that make the model take the attacker for the target."""

    title = "Impersonation"
    goal = "impersonate"
    key = "impersonation"
    needs_target = True
    intro = (
        "Impersonation: add photos of the attacker and of the target and press Start. AGN fine-tunes an "
        "eyeglass generator until one frame, worn on every photo of the attacker, brings each of them "
        "within the threshold of the target's embedding."
    )
