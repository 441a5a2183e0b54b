"""Learn attribute directions for any generator: ``advface semantic directions --generator G``.

InterFaceGAN's procedure on advface's measurable attributes, as a resumable run folder:

1. sample ``num_samples`` latents from ``seed`` (``latents.npy``);
2. render them in chunks, measure every attribute (:mod:`advface.semantic.scorers`) and append one row per
   sample to ``scores.tsv`` (a killed run resumes at the first chunk not written);
3. fit one linear SVM per attribute (:func:`advface.semantic.directions.fit_boundary`) and save the unit
   normals with their validation accuracy in ``directions/``;
4. check each direction: render ``-3 .. +3 sigma`` sweeps from fresh latents, measure the attribute along
   them (Spearman correlation of offset and measurement, per sweep) and save a montage
   ``sweeps/<attribute>.png``; ``summary.json`` gathers the figures.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError
from advface.generators import LatentGenerator, get_generator_spec
from advface.images import save_image
from advface.progress import ProgressCallback, report
from advface.runs import ResultsTable, write_config
from advface.semantic.directions import Directions, fit_boundary, montage, sweep_latents
from advface.semantic.scorers import ATTRIBUTES, UNITS, measure_faces

SWEEP_SIGMAS = np.linspace(-3.0, 3.0, 13)
MONTAGE_SIGMAS = np.linspace(-3.0, 3.0, 7)


@dataclass(frozen=True)
class DirectionCheck:
    """How one direction moves its own attribute over ``-3 .. +3 sigma`` sweeps.

    Attributes:
        spearman: per sweep, Spearman correlation between offset and measured attribute (NaN where a
            sweep lost the face).
        measured: ``(sweeps, steps)`` measured attribute.
        offsets: the offsets in sigma units.
    """

    spearman: np.ndarray
    measured: np.ndarray
    offsets: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.spearman))

    @property
    def median(self) -> float:
        return float(np.nanmedian(self.spearman))

    @property
    def pooled(self) -> float:
        """Spearman correlation over all sweeps together (offset vs measurement, finite points)."""
        from scipy.stats import spearmanr

        offsets = np.broadcast_to(self.offsets, self.measured.shape)
        keep = np.isfinite(self.measured)
        return float(spearmanr(offsets[keep], self.measured[keep]).statistic)


@dataclass(frozen=True)
class LearnedDirections:
    """What :func:`learn_directions` made: the directions, their checks and the run folder."""

    directions: Directions
    checks: dict
    summary: dict
    run_dir: Path


def check_direction(
    generator: LatentGenerator,
    direction: np.ndarray,
    sigma: float,
    attribute: str,
    *,
    sweeps: int = 16,
    seed: int = 1,
    box=None,
    offsets: np.ndarray = SWEEP_SIGMAS,
) -> DirectionCheck:
    """Measure ``attribute`` along ``latent + t sigma direction`` for ``sweeps`` fresh latents."""
    from scipy.stats import spearmanr

    bases = generator.sample(sweeps, seed)
    latents = sweep_latents(bases, direction, offsets * sigma).reshape(-1, bases.shape[1])
    measured = measure_faces(generator.images(latents), box=box).scores[attribute].reshape(sweeps, -1)
    spearman = np.array(
        [spearmanr(offsets, row).statistic if np.all(np.isfinite(row)) else np.nan for row in measured]
    )
    return DirectionCheck(spearman=spearman, measured=measured, offsets=np.asarray(offsets))


def learn_directions(
    out,
    generator: LatentGenerator,
    *,
    num_samples: int = 10_000,
    attributes=ATTRIBUTES,
    ratio: float = 0.1,
    seed: int = 0,
    batch_size: int = 250,
    box="auto",
    progress: ProgressCallback | None = None,
) -> LearnedDirections:
    """Learn one direction per attribute for ``generator`` into the run folder ``out`` (resumable).

    Args:
        out: run folder.
        generator: any :class:`LatentGenerator`.
        num_samples: latents rendered and scored.
        attributes: names from :data:`advface.semantic.scorers.ATTRIBUTES`.
        ratio: share of samples per SVM class (top and bottom scores).
        seed: latent seed (sweeps use ``seed + 1``).
        batch_size: samples rendered and scored per chunk (and per progress step).
        box: ``"auto"`` (the generator's registered face box, else detection), ``"detect"``, or fractions
            ``(left, top, right, bottom)``.
        progress: called once per chunk, then once per direction checked.
    """
    attributes = tuple(attributes)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or not attributes:
        raise AdvfaceError(
            f"Unknown attributes. Received: attributes={list(attributes)}. Known: {', '.join(ATTRIBUTES)}."
        )
    if not isinstance(num_samples, int) or num_samples < 20:
        raise AdvfaceError(f"`num_samples` must be an integer >= 20. Received: num_samples={num_samples!r}.")
    if not 0 < ratio <= 0.5:
        raise AdvfaceError(
            f"`ratio` (share of samples per SVM class) must be in (0, 0.5]. Received: ratio={ratio}."
        )
    if int(num_samples * ratio) < 5:
        raise AdvfaceError(
            f"{num_samples} samples at ratio {ratio} give fewer than 5 samples per SVM class. Received: "
            f"num_samples={num_samples}, ratio={ratio}. Use more samples or a larger ratio."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AdvfaceError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}.")
    if box == "auto":
        try:
            box = get_generator_spec(generator.name).face_box
        except AdvfaceError:
            box = None
    elif box == "detect":
        box = None
    out = Path(out)
    arguments = {
        "generator": generator.name,
        "num_samples": num_samples,
        "attributes": list(attributes),
        "ratio": ratio,
        "seed": seed,
        "box": list(box) if box else "detect",
    }
    _start(out, arguments)
    t0 = time.perf_counter()

    # 1. Latents, drawn once and kept (a resumed run scores the same faces).
    latents = generator.sample(num_samples, seed)
    table = ResultsTable(out / "scores.tsv", ["index", "found", *ATTRIBUTES])
    chunks = range(0, num_samples, batch_size)
    total = len(chunks) + len(attributes)

    # 2. Render and score, chunk by chunk; chunks already in scores.tsv are skipped.
    for step, start in enumerate(chunks, 1):
        index = range(start, min(start + batch_size, num_samples))
        todo = [i for i in index if str(i) not in table.done]
        if todo:
            measured = measure_faces(generator.images(latents[todo]), box=box)
            for k, i in enumerate(todo):
                row = {"index": i, "found": int(measured.found[k])}
                row.update({a: float(measured.scores[a][k]) for a in ATTRIBUTES})
                table.add(row)
        report(progress, step, total, "score", scored=len(todo))
    scores = _read_scores(table, num_samples)

    # 3. One SVM per attribute.
    boundaries = {a: fit_boundary(latents, scores[a], ratio=ratio, seed=seed) for a in attributes}
    matrix = np.stack([boundaries[a].normal for a in attributes])
    sigmas = np.array([float(np.std(latents @ boundaries[a].normal)) for a in attributes])
    meta = {
        a: {
            "source": f"learned by advface: linear SVM on {generator.name} samples",
            "score": UNITS[a],
            "svm_validation_accuracy": round(boundaries[a].validation_accuracy, 4),
            "svm_training_accuracy": round(boundaries[a].training_accuracy, 4),
            "svm_remaining_accuracy": round(boundaries[a].remaining_accuracy, 4),
            "samples_per_class": boundaries[a].positives,
            "num_samples": num_samples,
            "faces_scored": int(np.isfinite(scores[a]).sum()),
            "ratio": ratio,
            "seed": seed,
        }
        for a in attributes
    }
    directions = Directions(
        generator.name,
        generator.latent_space,
        attributes,
        matrix,
        sigmas,
        meta,
        provenance=f"advface semantic directions --generator {generator.name} --num-samples {num_samples} "
        f"--ratio {ratio} --seed {seed}",
    )
    directions.save(out / "directions")

    # 4. Check every direction on fresh sweeps and draw its montage.
    checks = {}
    for step, (a, vector, sigma) in enumerate(zip(attributes, matrix, sigmas, strict=True), len(chunks) + 1):
        checks[a] = check_direction(generator, vector, sigma, a, seed=seed + 1, box=box)
        bases = generator.sample(6, seed + 1)
        grid = generator.images(sweep_latents(bases, vector, MONTAGE_SIGMAS * sigma).reshape(-1, len(vector)))
        picture = montage(
            grid.reshape(6, len(MONTAGE_SIGMAS), *grid.shape[1:]),
            labels=[f"{s:+g} sigma" for s in MONTAGE_SIGMAS],
            scale=max(1, 128 // generator.resolution),
        )
        save_image(out / "sweeps" / f"{a}.png", picture)
        report(progress, step, total, "check", attribute=a, spearman=checks[a].median)

    summary = {
        "generator": generator.name,
        "num_samples": num_samples,
        "faces_scored": int(np.isfinite(scores[attributes[0]]).sum()),
        "seconds": round(time.perf_counter() - t0, 1),
        "directions": {
            a: {
                **{
                    k: meta[a][k]
                    for k in ("svm_validation_accuracy", "svm_training_accuracy", "samples_per_class")
                },
                "sigma": float(sigmas[i]),
                "sweep_spearman_median": round(checks[a].median, 4),
                "sweep_spearman_mean": round(checks[a].mean, 4),
                "sweep_spearman_pooled": round(checks[a].pooled, 4),
                "sweeps": len(checks[a].spearman),
            }
            for i, a in enumerate(attributes)
        },
        "cosines": np.round(directions.gram(), 3).tolist(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return LearnedDirections(directions, checks, summary, out)


def _start(out: Path, arguments: dict) -> None:
    config = out / "config.json"
    if config.is_file():
        previous = json.loads(config.read_text()).get("arguments", {})
        if {k: previous.get(k) for k in arguments} != json.loads(json.dumps(arguments)):
            raise AdvfaceError(
                f"{out} holds a run with other arguments ({previous}). Use a new --out folder, or repeat the "
                "arguments of the run that made it to resume it."
            )
        return
    write_config(out, "semantic directions", arguments, seed=arguments["seed"])


def _read_scores(table: ResultsTable, num_samples: int) -> dict:
    scores = {a: np.full(num_samples, np.nan) for a in ATTRIBUTES}
    for row in table.rows():
        i = int(row["index"])
        for a in ATTRIBUTES:
            scores[a][i] = float(row[a])
    return scores
