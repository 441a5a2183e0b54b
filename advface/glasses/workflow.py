"""The eyeglass attack as a job: photos in, a run folder out. Shared by the CLI, the demo and the GUI.

:func:`run_attack` aligns the attacker's photos for the model, builds the goal (dodging or
impersonation, for embedding models and classifiers), places the frames (template pose, or the
homography fitted to printed marks), runs :class:`~advface.attacks.eyeglasses.EyeglassAttack` and writes:

=======================  ==================================================================================
``config.json``          arguments, seed, versions
``steps.tsv``            one row per attack step (goal loss, realism, D loss, best share of photos fooled)
``results.tsv``          one row per photo: distance (or probability) without and with the glasses, fooled
``glasses.png``          the best frame (64x176 canvas, 8-bit)
``glasses-print.pdf``    the frame to print at 100% (and ``.png``), with a cut line (and marks if physical)
``photos/``              each photo's chip without and with the glasses
``objectives.png``       the objectives over the steps
``summary.json``         the outcome
=======================  ==================================================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError
from advface.progress import ProgressCallback

STEP_COLUMNS = ["step", "goal_loss", "realism", "d_loss", "checked", "best_fraction", "best_score"]


@dataclass(frozen=True)
class AttackRun:
    """A finished :func:`run_attack`: its folder, the attack's result and the summary it wrote."""

    out: Path
    summary: dict
    result: object = field(repr=False)


def label_index(model, value: str | int, flag: str = "label") -> int:
    """A classifier's class index from its name or index (unknown names list the known)."""
    labels = list(model.labels)
    if isinstance(value, str) and value in labels:
        return labels.index(value)
    if str(value).isdigit() and int(value) < len(labels):
        return int(value)
    raise AdvfaceError(
        f"Unknown class for {model.name}. Received: {flag}={value!r}. Known: "
        f"{', '.join(labels[:20])}{' ...' if len(labels) > 20 else ''} (or an index)."
    )


def face_chips(paths: Sequence[str | Path], model, aligner, flag: str = "images") -> np.ndarray:
    """The largest face of each photo as a chip for ``model`` (a photo without a face is an error)."""
    from advface.images import load_image

    if not paths:
        raise AdvfaceError(f"`{flag}` needs at least one photo.")
    return np.stack([aligner.align_one(load_image(p), model.template, source=str(p)).chip for p in paths])


def make_goal(
    goal: str,
    model,
    chips,
    aligner,
    *,
    references=None,
    target=None,
    true_class=None,
    target_class=None,
    threshold=None,
    probability=None,
):
    """The attack goal and a readable name for it.

    Args:
        goal: ``"dodge"`` or ``"impersonate"``.
        model: the zoo model attacked.
        chips: the attacker's chips (dodging references by default; a classifier's own class by default).
        references: photos enrolled for the attacker (embedding models, dodging; default: the chips).
        target: photos of the person to impersonate (embedding models).
        true_class / target_class: class name or index (classifiers).
    """
    from advface.attacks.base import Dodge, Impersonate, Misclassify, TargetClass

    if goal not in ("dodge", "impersonate"):
        raise AdvfaceError(f"Unknown goal. Received: goal={goal!r}. Known: dodge, impersonate.")
    if model.kind == "embedding":
        if goal == "dodge":
            refs = chips if not references else face_chips(references, model, aligner, "references")
            return Dodge(model.embed(refs), threshold), "own reference"
        if not target:
            raise AdvfaceError(
                f"Impersonation with an embedding model needs photos of the target (--target). "
                f"Received: model={model.name!r} and no target."
            )
        targets = face_chips(target, model, aligner, "target")
        return Impersonate(model.embed(targets), threshold), ", ".join(Path(p).stem for p in target)
    if goal == "dodge":
        if true_class is not None:
            label = label_index(model, true_class, "true_class")
        else:  # the class the model gives the clean photos (majority)
            label = int(np.bincount([c.index for c in model.classify(chips)]).argmax())
        return Misclassify(label, probability), model.labels[label]
    if target_class is None:
        raise AdvfaceError(
            f"Impersonation with a classifier needs a target class (--target-class). "
            f"Received: model={model.name!r}."
        )
    label = label_index(model, target_class, "target_class")
    return TargetClass(label, probability), model.labels[label]


def plot_objectives(history, path: Path) -> Path:
    """The goal loss, realism and best share of photos fooled over the steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h.step for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(
        axes,
        ("goal_loss", "realism", "best_fraction"),
        ("goal loss (lower: closer to the goal)", "D(frame is real)", "best share of photos fooled"),
        strict=True,
    ):
        ax.plot(steps, [getattr(h, key) for h in history])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def wear_on_photo(image: np.ndarray, glasses: np.ndarray, *, aligner=None) -> np.ndarray:
    """Put a frame on the largest face of a full photo (or camera frame), mapped through its landmarks.

    Args:
        image: ``(H, W, 3)`` in [0, 1].
        glasses: a ``(64, 176, 3)`` canvas in [0, 1].
    """
    from advface.alignment import FaceAligner
    from advface.glasses.geometry import GlassesRenderer, Placement, image_matrix

    aligner = aligner or FaceAligner()
    face = aligner.align_one(image, "vgg").face
    placement = Placement(image_matrix(aligner.chip_matrix(face, "vgg"))[None], image.shape[:2])
    worn = GlassesRenderer(placement)(np.asarray(glasses, np.float32)[None], image[None], np.array([0]))
    return np.asarray(worn)[0]


def run_attack(
    out: str | Path,
    *,
    model,
    images: Sequence[str | Path],
    goal: str,
    attack=None,
    references=None,
    target=None,
    true_class=None,
    target_class=None,
    threshold: float | None = None,
    probability: float | None = None,
    physical: bool = False,
    width_mm: float = 145.0,
    seed: int = 0,
    aligner=None,
    arguments: dict | None = None,
    progress: ProgressCallback | None = None,
) -> AttackRun:
    """Run the eyeglass attack on photos and write its run folder (see the module docstring).

    Args:
        out: the run folder; one that holds a finished attack (``summary.json``) is refused, an
            interrupted one starts over.
        model: a zoo name or ``FaceModel``.
        images: photos of the attacker (wearing printed marked frames when ``physical``).
        goal: ``"dodge"`` or ``"impersonate"``; see :func:`make_goal` for the other goal arguments.
        attack: an :class:`~advface.attacks.eyeglasses.EyeglassAttack` (default settings if None).
        physical: fit the placement to the 7 green marks on each photo.
        width_mm: printed width of the frame in the PDF.
        arguments: what to record in config.json (default: this call's arguments).
        progress: called once per attack step.
    """
    from advface.alignment import FaceAligner
    from advface.attacks.eyeglasses import EyeglassAttack
    from advface.glasses.physical import physical_placement, printable_frames
    from advface.images import save_image
    from advface.runs import ResultsTable, write_config
    from advface.zoo import load_model

    out = Path(out)
    if (out / "summary.json").is_file():
        raise AdvfaceError(
            f"{out} already holds a finished attack (summary.json). Use another output folder."
        )
    model = load_model(model) if isinstance(model, str) else model
    aligner = aligner or FaceAligner()
    attack = attack or EyeglassAttack()
    chips = face_chips(images, model, aligner, "images")
    goal_obj, goal_name = make_goal(
        goal,
        model,
        chips,
        aligner,
        references=references,
        target=target,
        true_class=true_class,
        target_class=target_class,
        threshold=threshold,
        probability=probability,
    )
    placement = None
    if physical:
        placement = physical_placement(
            chips, template=model.template.name, source_names=[str(p) for p in images]
        )
    record = arguments or dict(
        model=model.name,
        images=[str(p) for p in images],
        goal=goal,
        physical=physical,
        references=references,
        target=target,
        true_class=true_class,
        target_class=target_class,
        threshold=threshold,
        probability=probability,
        attack=vars(attack)
        | {
            "generator": str(attack.generator),
            "discriminator": str(attack.discriminator),
            "real_glasses": str(attack.real_glasses),
        },
    )
    write_config(out, f"glasses {goal}", record, seed=seed)
    for stale in ("steps.tsv", "results.tsv"):  # an interrupted attack starts over; its rows would mislead
        (out / stale).unlink(missing_ok=True)
    steps_table = ResultsTable(out / "steps.tsv", STEP_COLUMNS)

    def on_step(p):  # one steps.tsv row per step, flushed as it goes
        steps_table.add({"step": p.step, **{k: p.metrics[k] for k in STEP_COLUMNS[1:]}})
        if progress is not None:
            progress(p)

    t0 = time.perf_counter()
    result = attack(model, chips, goal_obj, placement=placement, progress=on_step, seed=seed)
    seconds = time.perf_counter() - t0

    save_image(out / "glasses.png", result.glasses)
    printable_frames(result.glasses, out / "glasses-print", width_mm=width_mm, marks=physical)
    score = "distance" if model.kind == "embedding" else "probability"
    table = ResultsTable(out / "results.tsv", ["photo", f"{score}_before", f"{score}_after", "fooled"])
    photos = []
    for i, path in enumerate(images):
        stem = f"{i:02d}_{Path(path).stem}"
        save_image(out / "photos" / f"{stem}_clean.png", chips[i])
        save_image(out / "photos" / f"{stem}_glasses.png", result.images[i])
        row = {
            "photo": str(path),
            f"{score}_before": float(result.scores_before[i]),
            f"{score}_after": float(result.scores_after[i]),
            "fooled": bool(result.success_per_image[i]),
        }
        table.add(row)
        photos.append(row)
    plot_objectives(result.history, out / "objectives.png")
    summary = {
        "goal": goal,
        "target": goal_name,
        "model": model.name,
        "success": result.success,
        "steps": result.steps,
        "seconds": round(seconds, 1),
        "threshold": result.threshold,
        "score": score,
        "physical": bool(physical),
        "photos": photos,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return AttackRun(out, summary, result)


def describe(run: AttackRun) -> str:
    """A few lines a person reads: outcome, steps, time, and each photo's score before and after."""
    s = run.summary
    lines = [
        f"{s['goal']} ({s['target']}) on {s['model']}: {'SUCCESS' if s['success'] else 'not reached'} "
        f"after {s['steps']} steps ({s['seconds']} s)"
    ]
    threshold = f" (threshold {s['threshold']:g})" if s["threshold"] is not None else ""
    for row in s["photos"]:
        lines.append(
            f"  {Path(row['photo']).name}: {s['score']} {row[s['score'] + '_before']:.4f} -> "
            f"{row[s['score'] + '_after']:.4f}{threshold}, {'fooled' if row['fooled'] else 'not fooled'}"
        )
    lines.append(f"run folder: {run.out} (glasses.png, glasses-print.pdf, photos/, objectives.png)")
    return "\n".join(lines)
