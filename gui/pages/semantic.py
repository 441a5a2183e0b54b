"""Semantic robustness page: generated identities, attribute sliders within a budget, latent attacks and
certificates.

1. **Identities.** "Generate" makes a run folder ``<runs root>/semantic-<YYYYmmdd-HHMMSS>`` with
   :func:`advface.semantic.identities.generate_identities` (N identities of a generator, embedded with a face
   model: the gallery) on the shared worker, and shows their clean renders; a click (or the index box)
   selects one.
2. **Attributes.** One slider per chosen attribute direction, each limited to its budget ``+-m_i`` (``m_i``
   = the budget in sigmas of that direction, :func:`advface.semantic.workflow.budgets_for`); a slider is
   also stopped where the whole offset reaches the ellipsoid's surface, so ``||delta||_M <= 1`` always.
   Moving a slider re-renders the face and embeds it (a debounced job on the worker: see
   :data:`DEBOUNCE_MS`) and shows the distance to the identity's own clean embedding, the nearest other
   identity of the gallery and whether 1:N identification still names the identity itself.
3. **Attacks and certificates.** Latent PGD, FAB-t and randomised smoothing on the selected identity, or
   over all identities: the attacks through :func:`~advface.semantic.workflow.run_attack` into the run
   folder, then :func:`~advface.semantic.workflow.evaluate` gives the attribute-importance ranking with its
   p-values; certification through :func:`~advface.semantic.workflow.run_certification`.

Rendering and embedding one 64x64 digiface-dcgan face with dlib-resnet takes 15-45 ms on a laptop CPU once
compiled, but its first call traces the graph (about 0.3 s), and the CPU is shared with any running job, so
the edit runs as a small worker job, 100 ms after the last slider move, whenever the worker is free.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, QSize, Qt, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from advface.errors import AdvfaceError
from advface.gui.pages.common import (
    DEFAULT_MODEL,
    JobPage,
    Picture,
    default_runs_root,
    message_label,
    model_choices,
    new_run_folder,
    pixmap,
    select,
)
from advface.progress import report

DEFAULT_GENERATOR = "digiface-dcgan"
DEFAULT_IDENTITIES = 20
DEFAULT_BUDGET = 1.0  # sigmas of each direction
DEBOUNCE_MS = 100
SLIDER_STEPS = 100  # slider ticks per budget m_i
SCOPES = ("selected identity", "all identities")
_THUMB = 64
_VIEW = 180


# -- plain functions and results (no Qt; they run on the worker) ----------------------------------------


def generator_choices() -> list[str]:
    """Names of the latent generators whose weights are here (the default when none is)."""
    from advface.generators import GENERATORS

    names = [name for name, spec in GENERATORS.items() if spec.available()]
    return names or [DEFAULT_GENERATOR]


@dataclass(frozen=True)
class Gallery:
    """Generated identities of one run folder, their clean renders and what edits them.

    Attributes:
        run: the run folder.
        identities: :class:`~advface.semantic.identities.Identities` (rows ``0 .. N-1``; the gallery).
        directions: every direction of the generator (the sliders use the chosen ones).
        pipeline: :class:`~advface.semantic.pipeline.FacePipeline` with all ``directions``.
        images: ``(N, R, R, 3)`` clean renders in [0, 1].
        setups: :class:`~advface.semantic.workflow.Setup` per ``(attributes, budget)``, built on first use.
    """

    run: Path
    identities: object
    directions: object
    pipeline: object
    images: np.ndarray = field(repr=False)
    setups: dict = field(default_factory=dict, repr=False, compare=False)

    def setup(self, attributes, budget: float):
        """The workflow's setup for ``attributes`` at ``budget`` sigmas (cached: attacks reuse its graphs)."""
        from advface.semantic.workflow import build_setup

        key = (tuple(attributes), float(budget))
        if key not in self.setups:
            self.setups[key] = build_setup(self.run, attributes=key[0], budget=key[1])
        return self.setups[key]


def make_gallery(*, run, generator: str, model: str, n: int, seed: int, progress=None) -> Gallery:
    """Generate ``n`` identities into the run folder ``run`` (resumable) and render their thumbnails."""
    from advface.semantic.directions import load_directions
    from advface.semantic.identities import generate_identities, load_identities
    from advface.semantic.pipeline import FacePipeline

    # 1. Identities and their gallery embeddings (progress once per batch of 8).
    run = generate_identities(run, generator, model, int(n), seed=int(seed), batch_size=8, progress=progress)
    identities = load_identities(run)
    # 2. The edit pipeline and the thumbnails.
    report(progress, 0, 1, "render", task="thumbnails")
    directions = load_directions(identities.generator)
    pipeline = FacePipeline(identities.generator, identities.model, directions=directions)
    images = pipeline.generator.images(identities.latents)
    report(progress, 1, 1, "render", task="thumbnails")
    return Gallery(Path(run), identities, directions, pipeline, images)


@dataclass(frozen=True)
class Edit:
    """One identity rendered with attribute offsets, and how identification sees it.

    Attributes:
        position: the identity (its row in the gallery).
        delta: ``(K,)`` coefficients along every direction of the gallery (0 on unchosen ones).
        image: ``(R, R, 3)`` the edited render.
        own_distance: distance to the identity's own clean embedding.
        nearest: the nearest *other* gallery identity, and ``nearest_distance`` its distance.
        matched: the nearest gallery identity overall (1:N identification); ``== position`` when it still
            matches itself.
        threshold: the model's verification threshold.
        seconds: time to render and embed.
    """

    position: int
    delta: np.ndarray
    image: np.ndarray = field(repr=False)
    own_distance: float
    nearest: int
    nearest_distance: float
    matched: int
    threshold: float | None
    seconds: float

    @property
    def still_matches(self) -> bool:
        return self.matched == self.position


def render_edit(*, gallery: Gallery, position: int, delta, progress=None) -> Edit:
    """Render identity ``position`` moved by ``delta`` ``(K,)`` and identify it against the gallery."""
    from advface.verification import pairwise_distances

    t0 = time.perf_counter()
    pipeline, identities = gallery.pipeline, gallery.identities
    delta = np.asarray(delta, np.float32).reshape(1, -1)
    latents = np.asarray(pipeline.perturb(identities.latents[position : position + 1], delta))
    images = pipeline.generator.images(latents)
    alignment = identities.alignments[position : position + 1]
    embedding = pipeline.embed_rendered(images, alignment)
    distances = pairwise_distances(embedding, identities.embeddings, pipeline.metric)[0]
    others = np.where(np.arange(len(distances)) == position, np.inf, distances)
    nearest = int(np.argmin(others))
    return Edit(
        position=int(position),
        delta=delta[0],
        image=images[0],
        own_distance=float(distances[position]),
        nearest=nearest,
        nearest_distance=float(others[nearest]),
        matched=int(np.argmin(distances)),
        threshold=pipeline.threshold,
        seconds=time.perf_counter() - t0,
    )


@dataclass(frozen=True)
class AttackOutcome:
    """A latent attack on one identity: its result and the faces to show."""

    attack: str
    position: int
    attributes: tuple[str, ...]
    budgets: dict
    result: object  # LatentAttackResult of one row
    clean: np.ndarray = field(repr=False)
    adversarial: np.ndarray = field(repr=False)
    matched_image: np.ndarray = field(repr=False)

    @property
    def success(self) -> bool:
        return bool(self.result.success[0])

    @property
    def magnitude(self) -> float:
        return float(self.result.magnitudes[0])

    @property
    def matched(self) -> int:
        """The gallery identity the adversarial face is taken for."""
        return int(self.result.predicted[0])


def attack_identity(
    *,
    gallery: Gallery,
    position: int,
    attack: str,
    attributes,
    budget: float,
    settings: dict,
    seed=0,
    progress=None,
) -> AttackOutcome:
    """Attack one identity (the workflow's :func:`run_attack` takes the first rows of a run, so this calls
    the attack itself on ``[row]``), in identification mode against the whole gallery."""
    from advface.semantic.workflow import make_attack

    # 1. The setup (a bad setting fails before the slow parts).
    setup = gallery.setup(attributes, budget)
    attacker = make_attack(attack, setup.ellipsoid, **settings)
    # 2. The attack (its progress callback raises Cancelled after Stop).
    row = int(gallery.identities.rows[position])
    result = attacker(setup.objective, np.array([row]), seed=int(seed), progress=progress)
    # 3. The faces: original, adversarial and the identity it is taken for.
    latent = gallery.identities.latents[position : position + 1]
    adversarial = np.asarray(setup.pipeline.perturb(latent, result.deltas.astype(np.float32)))
    matched = int(result.predicted[0])
    images = setup.pipeline.generator.images(
        np.concatenate([latent, adversarial, gallery.identities.latents[matched : matched + 1]])
    )
    return AttackOutcome(
        attack, position, tuple(attributes), dict(setup.budgets), result, images[0], images[1], images[2]
    )


@dataclass(frozen=True)
class CertifyOutcome:
    """Randomised smoothing of one identity's coefficients (a :class:`Certificate`)."""

    position: int
    label: int
    noise: str
    sigma: float
    certificate: object

    @property
    def radius(self) -> float:
        """The certified M-norm radius (0 when abstaining)."""
        return float(self.certificate.radius_m or 0.0)


def certify_identity(
    *,
    gallery: Gallery,
    position: int,
    attributes,
    budget: float,
    sigma: float,
    noise: str = "isotropic",
    n0: int = 20,
    n: int = 200,
    alpha: float = 0.001,
    seed=0,
    batch_size: int = 50,
    progress=None,
) -> CertifyOutcome:
    """Certify one identity by smoothing its attribute coefficients around ``delta = 0`` (the batch run's
    :func:`~advface.semantic.workflow.certify_row`: the same certificate the CLI writes for this row)."""
    from advface.semantic.workflow import certify_row

    setup = gallery.setup(attributes, budget)
    row = int(gallery.identities.rows[position])
    label, certificate = certify_row(
        setup,
        row,
        sigma=sigma,
        noise=noise,
        n0=n0,
        n=n,
        alpha=alpha,
        seed=int(seed),
        batch_size=batch_size,
        progress=progress,
    )
    return CertifyOutcome(position, label, noise, sigma, certificate)


@dataclass(frozen=True)
class GalleryOutcome:
    """An attack or a certification over every identity of the run, merged by :func:`evaluate`.

    Attributes:
        kind: ``"pgd"``, ``"fab"`` or ``"certify"``.
        name: the sub-folder of ``attacks/`` or ``certify/`` in the run folder.
        summary: that folder's entry of :func:`evaluate`'s summary.
        run: the run folder.
    """

    kind: str
    name: str
    summary: dict
    run: Path

    @property
    def ranking(self) -> str:
        from advface.semantic.workflow import ranking_text

        return ranking_text(self.summary) if self.kind != "certify" else ""


def attack_gallery(
    *, gallery: Gallery, attack: str, attributes, budget: float, settings: dict, seed=0, progress=None
) -> GalleryOutcome:
    """Attack every identity of the run into a new ``attacks/<name>`` and rank the attributes."""
    from advface.semantic.workflow import evaluate, run_attack

    setup = gallery.setup(attributes, budget)
    name = new_run_folder(gallery.run / "attacks", attack).name
    run_attack(
        gallery.run, attack, name=name, settings=settings, seed=int(seed), setup=setup, progress=progress
    )
    summary = evaluate(gallery.run, figures=0)
    return GalleryOutcome(attack, name, summary["attacks"][name], gallery.run)


def certify_gallery(
    *,
    gallery: Gallery,
    attributes,
    budget: float,
    sigma: float,
    noise: str = "isotropic",
    n0: int = 20,
    n: int = 200,
    alpha: float = 0.001,
    seed=0,
    batch_size: int = 50,
    progress=None,
) -> GalleryOutcome:
    """Certify every identity of the run into a new ``certify/<name>`` and summarise it."""
    from advface.semantic.workflow import evaluate, run_certification

    setup = gallery.setup(attributes, budget)
    name = new_run_folder(gallery.run / "certify", f"{noise}-sigma{sigma:g}").name
    run_certification(
        gallery.run,
        sigma=sigma,
        noise=noise,
        n0=n0,
        n=n,
        alpha=alpha,
        seed=int(seed),
        batch_size=batch_size,
        name=name,
        setup=setup,
        progress=progress,
    )
    summary = evaluate(gallery.run, figures=0)
    return GalleryOutcome("certify", name, summary["certificates"][name], gallery.run)


def _p_values(values) -> str:
    return ", ".join(f"{float(p):.3g}" for p in values) if values else "none"


# -- the page ------------------------------------------------------------------------------------------


class SemanticPage(JobPage):
    """Browse generated identities, edit their attributes within a budget, attack and certify them."""

    title = "Semantic robustness"

    def __init__(self, worker, settings: QSettings, parent: QWidget | None = None):
        super().__init__(worker, settings, parent)
        self.gallery: Gallery | None = None
        self.position = 0
        self.delta: dict[str, float] = {}  # attribute -> coefficient of the selected identity's offset
        self.budgets: dict[str, float] = {}  # attribute -> m (coefficient units)
        self.last_edit: Edit | None = None
        self.last_attack: AttackOutcome | None = None
        self.last_certificate: CertifyOutcome | None = None
        self.last_gallery_run: GalleryOutcome | None = None
        self.edit_count = 0  # edits shown so far (tests wait on it)
        self._queued: tuple | None = None  # a run asked for while a preview was rendering
        self._preview_wanted = False
        self._directions = None  # the generator's directions before a gallery exists

        # 1. Identities.
        self.generator_combo = QComboBox()
        self.generator_combo.addItems(generator_choices())
        select(self.generator_combo, str(settings.value("semantic/generator", "")), DEFAULT_GENERATOR)
        self.generator_combo.currentTextChanged.connect(lambda _: self._directions_changed())
        self.model_combo = QComboBox()
        self.model_combo.addItems(model_choices())
        select(self.model_combo, str(settings.value("semantic/model", "")), DEFAULT_MODEL)
        self.count_spin = _spin(2, 1000, int(settings.value("semantic/n", DEFAULT_IDENTITIES)), "N ")
        self.seed_spin = _spin(0, 2**31 - 1, int(settings.value("semantic/seed", 0)), "seed ")
        self.root_edit = QLineEdit(str(settings.value("semantic/runs", str(default_runs_root()))))
        self.root_button = QPushButton("...")
        self.root_button.clicked.connect(self._browse_root)
        self.generate_button = QPushButton("Generate identities")
        self.generate_button.clicked.connect(lambda: self.generate())
        self.run_label = QLabel("no identities yet")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.thumbs = QListWidget()
        self.thumbs.setViewMode(QListView.ViewMode.IconMode)
        self.thumbs.setIconSize(QSize(_THUMB, _THUMB))
        self.thumbs.setMovement(QListView.Movement.Static)
        self.thumbs.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbs.setFixedHeight(2 * (_THUMB + 30) + 8)
        self.thumbs.currentRowChanged.connect(self._thumb_selected)
        self.index_spin = _spin(0, 0, 0, "identity ")
        self.index_spin.setEnabled(False)
        self.index_spin.valueChanged.connect(self.select)

        # 2. Attributes.
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(0.05, 10.0)
        self.budget_spin.setSingleStep(0.25)
        self.budget_spin.setDecimals(2)
        self.budget_spin.setValue(float(settings.value("semantic/budget", DEFAULT_BUDGET)))
        self.budget_spin.setSuffix(" sigma")
        self.budget_spin.valueChanged.connect(lambda _: self._rebuild_sliders())
        self.checks_row = QHBoxLayout()
        self.checks: dict[str, QCheckBox] = {}
        self.sliders_grid = QGridLayout()
        self.sliders: dict = {}  # attribute -> (QSlider, value label)
        self.reset_button = QPushButton("Reset offsets")
        self.reset_button.clicked.connect(self.reset_offsets)
        self.original_view = Picture("Original", _VIEW)
        self.edited_view = Picture("Edited", _VIEW)
        self.edit_info = QLabel("")
        self.edit_info.setWordWrap(True)
        self.edit_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._request_preview)

        # 3. Attacks and certificates.
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(SCOPES)
        self.pgd_steps = _spin(1, 10_000, 10, "steps ")
        self.pgd_restarts = _spin(1, 100, 2, "restarts ")
        self.fab_steps = _spin(1, 10_000, 5, "steps ")
        self.fab_restarts = _spin(1, 100, 1, "restarts ")
        self.fab_targets = _spin(1, 100, 2, "targets ")
        self.sigma_spin = QDoubleSpinBox()
        self.sigma_spin.setRange(0.01, 10.0)
        self.sigma_spin.setSingleStep(0.1)
        self.sigma_spin.setValue(0.5)
        self.sigma_spin.setPrefix("sigma ")
        self.noise_combo = QComboBox()
        self.noise_combo.addItems(["isotropic", "anisotropic"])
        self.n0_spin = _spin(1, 1_000_000, 20, "n0 ")
        self.n_spin = _spin(1, 10_000_000, 200, "N ")
        self.alpha_spin = QDoubleSpinBox()
        self.alpha_spin.setDecimals(4)
        self.alpha_spin.setRange(0.0001, 0.5)
        self.alpha_spin.setSingleStep(0.001)
        self.alpha_spin.setValue(0.001)
        self.alpha_spin.setPrefix("alpha ")
        self.pgd_button = QPushButton("Run PGD")
        self.pgd_button.clicked.connect(lambda: self.run_pgd())
        self.fab_button = QPushButton("Run FAB-t")
        self.fab_button.clicked.connect(lambda: self.run_fab())
        self.certify_button = QPushButton("Certify")
        self.certify_button.clicked.connect(lambda: self.certify())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("")
        self.clean_view = Picture("Original", _VIEW)
        self.adv_view = Picture("Adversarial", _VIEW)
        self.matched_view = Picture("Taken for", _VIEW)
        self.result_text = QLabel("")
        self.result_text.setWordWrap(True)
        self.result_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = message_label()

        self._layout()
        self._directions_changed()
        self._enable()

    # -- layout --------------------------------------------------------------------------------------

    def _layout(self) -> None:
        ids_box = QGroupBox("Identities (generated; the gallery is all of them)")
        ids = QVBoxLayout(ids_box)
        row = QHBoxLayout()
        for widget in (QLabel("generator"), self.generator_combo, QLabel("model"), self.model_combo):
            row.addWidget(widget)
        row.addWidget(self.count_spin)
        row.addWidget(self.seed_spin)
        row.addWidget(self.generate_button)
        row.addStretch(1)
        ids.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("runs folder"))
        row.addWidget(self.root_edit, 1)
        row.addWidget(self.root_button)
        ids.addLayout(row)
        ids.addWidget(self.run_label)
        ids.addWidget(self.thumbs)
        ids.addWidget(self.index_spin, 0, Qt.AlignmentFlag.AlignLeft)

        edit_box = QGroupBox("Attributes: offsets along the learned directions, each within +-m (its budget)")
        edit = QVBoxLayout(edit_box)
        row = QHBoxLayout()
        row.addWidget(QLabel("budget m ="))
        row.addWidget(self.budget_spin)
        row.addLayout(self.checks_row)
        row.addStretch(1)
        row.addWidget(self.reset_button)
        edit.addLayout(row)
        row = QHBoxLayout()
        row.addLayout(self.sliders_grid, 1)
        row.addWidget(self.original_view)
        row.addWidget(self.edited_view)
        edit.addLayout(row)
        edit.addWidget(self.edit_info)

        run_box = QGroupBox("Attacks and certification (identification against the gallery)")
        runs = QGridLayout(run_box)
        runs.addWidget(QLabel("on"), 0, 0)
        runs.addWidget(self.scope_combo, 0, 1, 1, 2)
        runs.addWidget(self.pgd_button, 1, 0)
        runs.addWidget(self.pgd_steps, 1, 1)
        runs.addWidget(self.pgd_restarts, 1, 2)
        runs.addWidget(self.fab_button, 2, 0)
        runs.addWidget(self.fab_steps, 2, 1)
        runs.addWidget(self.fab_restarts, 2, 2)
        runs.addWidget(self.fab_targets, 2, 3)
        runs.addWidget(self.certify_button, 3, 0)
        runs.addWidget(self.sigma_spin, 3, 1)
        runs.addWidget(self.noise_combo, 3, 2)
        runs.addWidget(self.n0_spin, 3, 3)
        runs.addWidget(self.n_spin, 3, 4)
        runs.addWidget(self.alpha_spin, 3, 5)
        runs.addWidget(self.stop_button, 4, 0)
        runs.addWidget(self.progress_bar, 4, 1, 1, 3)
        runs.addWidget(self.status, 4, 4, 1, 2)
        views = QHBoxLayout()
        for view in (self.clean_view, self.adv_view, self.matched_view):
            views.addWidget(view)
        views.addStretch(1)
        runs.addLayout(views, 5, 0, 1, 6)
        runs.addWidget(self.result_text, 6, 0, 1, 6)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(ids_box)
        layout.addWidget(edit_box)
        layout.addWidget(run_box)
        layout.addWidget(self.message)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    # -- identities ----------------------------------------------------------------------------------

    @property
    def generator_name(self) -> str:
        return self.generator_combo.currentText()

    @property
    def model_name(self) -> str:
        return self.model_combo.currentText()

    def _browse_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Runs folder", self.root_edit.text())
        if folder:
            self.root_edit.setText(folder)

    def generate(self, *, n: int | None = None, seed: int | None = None) -> bool:
        """Generate identities into a new run folder under the runs root (a job); False if none started."""
        if n is not None:
            self.count_spin.setValue(n)
        if seed is not None:
            self.seed_spin.setValue(seed)
        root = self.root_edit.text().strip()
        if not root:
            self._show_message("Choose a runs folder first (where the run folders go).")
            return False
        for key, value in (
            ("runs", root),
            ("generator", self.generator_name),
            ("model", self.model_name),
            ("n", self.count_spin.value()),
            ("seed", self.seed_spin.value()),
        ):
            self.settings.setValue(f"semantic/{key}", value)
        return self._start(
            "gallery",
            make_gallery,
            run=new_run_folder(root, "semantic"),
            generator=self.generator_name,
            model=self.model_name,
            n=self.count_spin.value(),
            seed=self.seed_spin.value(),
        )

    def _show_gallery(self, gallery: Gallery) -> None:
        self.gallery = gallery
        self._directions = gallery.directions
        self.run_label.setText(
            f"{len(gallery.identities)} identities of {gallery.identities.generator} embedded with "
            f"{gallery.identities.model} in {gallery.run}"
        )
        self.thumbs.blockSignals(True)
        self.thumbs.clear()
        for i, image in enumerate(gallery.images):
            self.thumbs.addItem(QListWidgetItem(QIcon(pixmap(image)), str(int(gallery.identities.rows[i]))))
        self.thumbs.blockSignals(False)
        self.index_spin.blockSignals(True)
        self.index_spin.setRange(0, len(gallery.identities) - 1)
        self.index_spin.blockSignals(False)
        self.index_spin.setEnabled(True)
        self._rebuild_checks()
        self.select(0, force=True)

    def _thumb_selected(self, index: int) -> None:
        if index >= 0:
            self.select(index)

    def select(self, position: int, force: bool = False) -> None:
        """Select identity ``position``: its offsets start at 0, and the original and edit views follow."""
        if self.gallery is None:
            return
        position = int(np.clip(position, 0, len(self.gallery.identities) - 1))
        if position == self.position and not force:
            return
        self.position = position
        for widget, setter in ((self.thumbs, "setCurrentRow"), (self.index_spin, "setValue")):
            widget.blockSignals(True)
            getattr(widget, setter)(position)
            widget.blockSignals(False)
        self.original_view.show_image(self.gallery.images[position], f"identity {position}")
        self.reset_offsets()

    # -- attributes ----------------------------------------------------------------------------------

    @property
    def attributes(self) -> tuple[str, ...]:
        """The chosen attributes, in the directions' order."""
        return tuple(name for name, check in self.checks.items() if check.isChecked())

    def _directions_changed(self) -> None:
        if self.gallery is not None and self.gallery.identities.generator == self.generator_name:
            self._directions = self.gallery.directions
        else:
            from advface.semantic.directions import load_directions

            try:
                self._directions = load_directions(self.generator_name)
            except AdvfaceError as exc:
                self._directions = None
                self._show_message(str(exc))
        self._rebuild_checks()

    def _rebuild_checks(self) -> None:
        from advface.semantic.workflow import DEFAULT_ATTRIBUTES

        while self.checks_row.count():
            self.checks_row.takeAt(0).widget().deleteLater()
        self.checks = {}
        if self._directions is None:
            self._rebuild_sliders()
            return
        chosen = DEFAULT_ATTRIBUTES.get(self._directions.generator, self._directions.names)
        for name in self._directions.names:
            check = QCheckBox(name)
            check.setChecked(name in chosen)
            check.toggled.connect(lambda _: self._rebuild_sliders())
            self.checks_row.addWidget(check)
            self.checks[name] = check
        self._rebuild_sliders()

    def set_attributes(self, names) -> None:
        """Choose the attributes edited, attacked and certified."""
        for name, check in self.checks.items():
            check.blockSignals(True)
            check.setChecked(name in names)
            check.blockSignals(False)
        self._rebuild_sliders()

    def _rebuild_sliders(self) -> None:
        from PySide6.QtWidgets import QSlider

        from advface.semantic.workflow import budgets_for

        while self.sliders_grid.count():
            self.sliders_grid.takeAt(0).widget().deleteLater()
        self.sliders, self.delta, self.budgets = {}, {}, {}
        self.settings.setValue("semantic/budget", self.budget_spin.value())
        if self._directions is None or not self.attributes:
            self._request_edit()
            return
        self.budgets = budgets_for(self._directions, self.attributes, self.budget_spin.value())
        for i, name in enumerate(self.attributes):
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(-SLIDER_STEPS, SLIDER_STEPS)
            slider.setMinimumWidth(200)
            value = QLabel(f"{0:+.3f}")
            slider.valueChanged.connect(
                lambda v, a=name: self.set_offset(a, v / SLIDER_STEPS * self.budgets[a])
            )
            self.sliders_grid.addWidget(QLabel(name), i, 0)
            self.sliders_grid.addWidget(slider, i, 1)
            self.sliders_grid.addWidget(value, i, 2)
            self.sliders_grid.addWidget(QLabel(f"+-{self.budgets[name]:.3f}"), i, 3)
            self.sliders[name] = (slider, value)
            self.delta[name] = 0.0
        self._request_edit()

    @property
    def ellipsoid(self):
        """The budget region of the chosen attributes (None without any)."""
        from advface.semantic.budget import Ellipsoid

        if not self.budgets:
            return None
        return Ellipsoid.from_budgets([self.budgets[a] for a in self.attributes], names=self.attributes)

    @property
    def m_norm(self) -> float:
        """``||delta||_M`` of the current offset (0 without attributes)."""
        region = self.ellipsoid
        if region is None:
            return 0.0
        return float(np.ravel(region.norm(np.array([[self.delta[a] for a in self.attributes]])))[0])

    def set_offset(self, attribute: str, value: float) -> float:
        """Move ``attribute`` to ``value`` (coefficient units), stopped at its budget and at the ellipsoid's
        surface; returns the value set."""
        if attribute not in self.sliders:
            raise AdvfaceError(
                f"No slider for this attribute. Received: attribute={attribute!r}. Chosen: "
                f"{', '.join(self.attributes) or 'none'}."
            )
        slider, label = self.sliders[attribute]
        m = self.budgets[attribute]
        names = self.attributes
        current = np.array([self.delta[a] for a in names])
        index = names.index(attribute)
        value = self.ellipsoid.clamp_coordinate(current, index, float(np.clip(value, -m, m)))
        ticks = int(value / m * SLIDER_STEPS)  # towards 0: the ticks never leave the ellipsoid
        value = ticks / SLIDER_STEPS * m
        slider.blockSignals(True)
        slider.setValue(ticks)
        slider.blockSignals(False)
        self.delta[attribute] = value
        label.setText(f"{value:+.3f}")
        self._request_edit()
        return value

    def reset_offsets(self) -> None:
        for name, (slider, label) in self.sliders.items():
            slider.blockSignals(True)
            slider.setValue(0)
            slider.blockSignals(False)
            label.setText(f"{0:+.3f}")
            self.delta[name] = 0.0
        self._request_edit()

    def full_delta(self) -> np.ndarray:
        """The offset ``(K,)`` over every direction of the gallery (0 on unchosen attributes)."""
        names = self.gallery.directions.names
        return np.array([self.delta.get(name, 0.0) for name in names], np.float32)

    def _request_edit(self) -> None:
        """Render the edit ``DEBOUNCE_MS`` after the last change."""
        if self.gallery is not None:
            self._debounce.start()

    def _request_preview(self) -> None:
        if self.gallery is None:
            return
        if self.worker.is_busy:  # this page's or another's job: render when the worker is free
            self._preview_wanted = True
            return
        self._preview_wanted = False
        self._start(
            "preview", render_edit, gallery=self.gallery, position=self.position, delta=self.full_delta()
        )

    def _show_edit(self, edit: Edit) -> None:
        if self.gallery is None or edit.position != self.position:
            return
        self.last_edit = edit
        self.edit_count += 1
        stale = not np.allclose(edit.delta, self.full_delta())
        if stale:  # the sliders moved while it rendered: render again once the worker is free
            self._preview_wanted = True
            QTimer.singleShot(0, self._next)
        verdict = (
            f"still identified as itself (identity {edit.position})"
            if edit.still_matches
            else f"now identified as identity {edit.matched}"
        )
        self.edited_view.show_image(edit.image, f"||delta||_M = {self.m_norm:.3f}")
        threshold = "" if edit.threshold is None else f" (threshold {edit.threshold:g})"
        self.edit_info.setText(
            f"M-norm of the offset {self.m_norm:.3f} (budget: <= 1). Distance to its own clean embedding "
            f"{edit.own_distance:.4f}{threshold}; nearest other identity {edit.nearest} at "
            f"{edit.nearest_distance:.4f}: {verdict}. Rendered and embedded in {edit.seconds * 1000:.0f} ms."
        )

    # -- attacks and certificates --------------------------------------------------------------------

    @property
    def scope(self) -> str:
        return self.scope_combo.currentText()

    def run_pgd(
        self, *, steps: int | None = None, restarts: int | None = None, scope: str | None = None
    ) -> bool:
        """Latent PGD within the budget on the selected identity or on all (then: the ranking)."""
        if steps is not None:
            self.pgd_steps.setValue(steps)
        if restarts is not None:
            self.pgd_restarts.setValue(restarts)
        settings = {"steps": self.pgd_steps.value(), "restarts": self.pgd_restarts.value(), "batch_size": 10}
        return self._attack("pgd", settings, scope)

    def run_fab(
        self,
        *,
        steps: int | None = None,
        restarts: int | None = None,
        targets: int | None = None,
        scope: str | None = None,
    ) -> bool:
        """FAB-t (the smallest M-norm it finds, unbounded) on the selected identity or on all."""
        for spin, value in (
            (self.fab_steps, steps),
            (self.fab_restarts, restarts),
            (self.fab_targets, targets),
        ):
            if value is not None:
                spin.setValue(value)
        settings = {
            "steps": self.fab_steps.value(),
            "restarts": self.fab_restarts.value(),
            "targets": self.fab_targets.value(),
            "batch_size": 10,
        }
        return self._attack("fab", settings, scope)

    def _attack(self, attack: str, settings: dict, scope: str | None) -> bool:
        if not self._ready(scope):
            return False
        common = {"gallery": self.gallery, "attack": attack, "attributes": self.attributes}
        common |= {"budget": self.budget_spin.value(), "settings": settings}
        if self.scope == SCOPES[1]:
            return self._start(attack, attack_gallery, **common)
        return self._start(attack, attack_identity, position=self.position, **common)

    def certify(
        self,
        *,
        sigma: float | None = None,
        n0: int | None = None,
        n: int | None = None,
        scope: str | None = None,
    ) -> bool:
        """Randomised smoothing of the attribute coefficients of the selected identity, or of all."""
        for spin, value in ((self.sigma_spin, sigma), (self.n0_spin, n0), (self.n_spin, n)):
            if value is not None:
                spin.setValue(value)
        if not self._ready(scope):
            return False
        kwargs = {
            "gallery": self.gallery,
            "attributes": self.attributes,
            "budget": self.budget_spin.value(),
            "sigma": self.sigma_spin.value(),
            "noise": self.noise_combo.currentText(),
            "n0": self.n0_spin.value(),
            "n": self.n_spin.value(),
            "alpha": self.alpha_spin.value(),
        }
        if self.scope == SCOPES[1]:
            return self._start("certify", certify_gallery, **kwargs)
        return self._start("certify", certify_identity, position=self.position, **kwargs)

    def _ready(self, scope: str | None) -> bool:
        if scope is not None:
            select(self.scope_combo, scope, SCOPES[0])
        if self.gallery is None:
            self._show_message("Generate identities first.")
            return False
        if not self.attributes:
            self._show_message("Choose at least one attribute to attack.")
            return False
        return True

    def _show_attack(self, outcome: AttackOutcome) -> None:
        self.last_attack = outcome
        name = {"pgd": "Latent PGD", "fab": "FAB-t"}[outcome.attack]
        coefficients = ", ".join(
            f"{a} {d:+.3f}" for a, d in zip(outcome.attributes, outcome.result.deltas[0], strict=True)
        )
        self.clean_view.show_image(outcome.clean, f"identity {outcome.position}")
        self.adv_view.show_image(outcome.adversarial, f"||delta||_M = {outcome.magnitude:.4f}")
        self.matched_view.show_image(outcome.matched_image, f"identity {outcome.matched}")
        if outcome.success:
            verdict = (
                f"success: identity {outcome.position} is now identified as identity {outcome.matched}, "
                f"magnitude ||delta||_M = {outcome.magnitude:.4f}"
                + (" (within the budget)" if outcome.magnitude <= 1 + 1e-6 else " (outside the budget)")
            )
        else:
            verdict = f"failed: identity {outcome.position} is still identified as itself"
        self.result_text.setText(
            f"{name} on identity {outcome.position}: {verdict}. Offsets: {coefficients}. "
            f"{outcome.result.seconds:.1f} s."
        )

    def _show_certificate(self, outcome: CertifyOutcome) -> None:
        self.last_certificate = outcome
        c = outcome.certificate
        head = (
            f"Certification of identity {outcome.position} ({outcome.noise} noise, sigma {outcome.sigma:g}, "
        )
        head += f"n0 {c.n0}, N {c.n}, alpha {c.alpha:g}): "
        if c.abstained:
            body = f"abstained (p_lower {c.p_lower:.4f} < 1/2): certified radius {outcome.radius:.4f}."
        else:
            who = "itself" if c.predicted == outcome.label else f"identity {c.predicted}"
            body = (
                f"smoothed prediction {who}, p_lower {c.p_lower:.4f}, certified radius "
                f"{outcome.radius:.4f} (M-norm; L2 {c.radius:.4f} in coefficients)."
            )
        warning = f" {c.warning}" if c.warning else ""
        self.result_text.setText(head + body + f" {c.seconds:.1f} s.{warning}")

    def _show_gallery_run(self, outcome: GalleryOutcome) -> None:
        self.last_gallery_run = outcome
        s = outcome.summary
        where = (
            f" Files: {outcome.run / ('certify' if outcome.kind == 'certify' else 'attacks') / outcome.name}."
        )
        if outcome.kind == "certify":
            self.result_text.setText(
                f"Certification of {s['instances']} identities: {s['certified']} certified, "
                f"{s['abstained']} abstained, median radius {s['median_radius']:.4f} ({s['radius_unit']})."
                + where
            )
            return
        name = {"pgd": "Latent PGD", "fab": "FAB-t"}[outcome.kind]
        if not s["friedman"]:
            tests = "p-values: none (the ranking needs two successes and two attributes)"
        else:
            wilcoxon = (
                f"p-values: {_p_values(s['p_values'])} (one-sided Wilcoxon, each attribute over the next)"
                if s["p_values"]
                else "p-values: none (fewer than two attributes ranked)"
            )
            tests = f"{wilcoxon}; Friedman p-values: {_p_values(s['friedman'])} (alpha 0.05)"
        self.result_text.setText(
            f"{name} over {s['instances']} identities: {s['successes']} successes (rate {s['rate']:.2f}, "
            f"mean magnitude {s['avg_mag']:.4f}). Attribute importance: {outcome.ranking}; {tests}." + where
        )

    # -- jobs ----------------------------------------------------------------------------------------

    def is_idle(self) -> bool:
        """No job runs, and no edit or run waits to start (edits are debounced and queued)."""
        return (
            super().is_idle()
            and self._queued is None
            and not self._preview_wanted
            and not self._debounce.isActive()
        )

    def _start(self, job: str, fn, **kwargs) -> bool:
        if job != "preview":
            self._show_message("")
        if self.job == "preview" and job != "preview":  # the edit is quick: run this right after it
            self._queued = (job, fn, kwargs)
            self._job_started(job)
            return True
        if not self.start_job(fn, job=job, **kwargs):  # job: gallery, preview, pgd, fab, certify
            if job != "preview":
                self._show_message(self.busy_message())
            return False
        self._job_started(job)
        return True

    def _job_started(self, job: str) -> None:
        if job != "preview":
            self.progress_bar.setRange(0, 0)
            self.status.setText(f"{job}: starting")
        self._enable()

    def on_busy(self, busy: bool, mine: bool) -> None:
        self._enable()
        if not busy and (self._preview_wanted or self._queued):
            QTimer.singleShot(0, self._next)  # after the worker's finished signal has been delivered

    def _next(self) -> None:
        if self.worker.is_busy:
            return
        if self._queued is not None:
            job, fn, kwargs = self._queued
            self._queued = None
            self._start(job, fn, **kwargs)
        elif self._preview_wanted:
            self._request_preview()

    def on_progress(self, p) -> None:
        if self.job == "preview":
            return
        total = p.total or 0
        self.progress_bar.setRange(0, total)
        if total:
            self.progress_bar.setValue(min(p.step, total))
        self.status.setText(f"{p.stage}: {p.step}/{total}" if total else f"{p.stage}: {p.step}")

    def on_finished(self, result) -> None:
        job = self.job
        if job != "preview":
            self._done("")
        if isinstance(result, Gallery):
            self._show_gallery(result)
        elif isinstance(result, Edit):
            self._show_edit(result)
        elif isinstance(result, AttackOutcome):
            self._show_attack(result)
        elif isinstance(result, CertifyOutcome):
            self._show_certificate(result)
        elif isinstance(result, GalleryOutcome):
            self._show_gallery_run(result)
        self._enable()

    def on_failed(self, message: str, details: str) -> None:
        job = self.job
        self._done("")
        self._show_message(message if job != "preview" else f"Rendering the edit failed: {message}")
        self._enable()

    def on_cancelled(self) -> None:
        job = self.job
        if job == "preview":  # Stop while an edit rendered (a run was queued): the edit is still owed
            self._preview_wanted = True
        self._done("")
        self._show_message("Stopped.")
        self._enable()

    def stop(self) -> None:
        self._queued = None
        super().stop()

    def _done(self, text: str) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status.setText(text)

    def _enable(self) -> None:
        """Buttons follow the worker: runs only while it is free (or only rendering this page's edit)."""
        free = not self.worker.is_busy or (self.job == "preview" and self._queued is None)
        has_gallery = self.gallery is not None
        self.generate_button.setEnabled(free)
        for button in (self.pgd_button, self.fab_button, self.certify_button):
            button.setEnabled(free and has_gallery)
        self.stop_button.setEnabled(
            self.running and self.job not in (None, "preview") or self._queued is not None
        )
        self.reset_button.setEnabled(has_gallery)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)


def _spin(low: int, high: int, value: int, prefix: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setPrefix(prefix)
    return spin
