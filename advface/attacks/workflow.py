"""Pixel attacks on photos, into a run folder: what ``advface attack`` and the GUI call.

A run folder holds:

- ``config.json``: the arguments, seed, package versions and machine;
- ``results.tsv``: one row per photo (per photo and epsilon in a sweep), flushed as each batch finishes;
- ``images/``: each photo's chip, clean and adversarial (8-bit PNG), and its perturbation magnified;
- ``summary.json`` and plots (scores before/after; success rate against epsilon for a sweep).

Runs resume: started again with the same arguments after a crash or ``kill -9``, a run skips the rows
already in ``results.tsv`` (a half-written last row is dropped) and attacks only the rest. Each batch's
seed is derived from the position of its first photo in the list, so reruns are reproducible. Changed
arguments on an existing folder are refused. Photos that cannot be read or show no face get a row with
their status instead of stopping a batch job.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError
from advface.progress import Progress, ProgressCallback

COLUMNS = [
    "key",
    "image",
    "epsilon",
    "status",
    "label",
    "clean_score",
    "score",
    "clean_success",
    "success",
    "success_8bit",
    "linf",
    "l2",
    "steps",
    "queries",
]
GOALS = ("dodge", "impersonate", "misidentify")


@dataclass(frozen=True)
class GoalSpec:
    """What the attacker wants, before the photos are read: ``goal`` (dodge, impersonate, misidentify)
    and the material it needs.

    Attributes:
        goal: ``"dodge"``, ``"impersonate"`` or ``"misidentify"``.
        references: dodging: enrolment photos of the attacker; none = each photo against its own clean
            embedding (1:1 pairs).
        targets: impersonation: photos of the person to be taken for.
        gallery: misidentification: folder with one sub-folder per person, or flat ``name[N].jpg`` files.
        threshold: overrides the model's (or gallery's) threshold.
        open_set: misidentification also counts rejection as unknown.
        true_class, target_class: classifiers: the attacker's class (default: the clean prediction) and
            the class to impersonate.
    """

    goal: str = "dodge"
    references: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    gallery: str | None = None
    threshold: float | None = None
    open_set: bool = False
    true_class: str | None = None
    target_class: str | None = None


@dataclass(frozen=True)
class PixelRun:
    """A finished run: its folder and ``summary.json`` contents."""

    out: Path
    summary: dict


def magnify(delta: np.ndarray) -> np.ndarray:
    """A perturbation ``(H, W, 3)`` shown as an image: grey 0.5 is zero, scaled so the largest change is
    black or white."""
    peak = float(np.abs(delta).max())
    return np.clip(0.5 + 0.5 * delta / peak, 0.0, 1.0) if peak > 0 else np.full_like(delta, 0.5)


class _GoalMaker:
    """Builds each batch's goal from a :class:`GoalSpec` (target and gallery embeddings computed once)."""

    def __init__(self, spec: GoalSpec, model, aligner, photos: list[Path]):
        from advface.glasses.workflow import face_chips, label_index

        self.spec, self.model = spec, model
        if spec.goal not in GOALS:
            raise AdvfaceError(f"Unknown goal. Received: goal={spec.goal!r}. Known: {', '.join(GOALS)}.")
        self.refs = self.targets = self.gallery = None
        self.true_class = self.target_class = None
        classifier = model.kind == "classifier"
        if spec.goal == "misidentify":
            if classifier:
                raise AdvfaceError(
                    f"{model.name} is a classifier: misidentification is its dodging. Use --goal dodge."
                )
            if spec.gallery is None:
                raise AdvfaceError("--goal misidentify needs --gallery FOLDER (one sub-folder per person).")
            self.gallery = _gallery(model, aligner, Path(spec.gallery), spec.threshold, photos)
        elif spec.goal == "impersonate":
            if classifier:
                if spec.target_class is None:
                    raise AdvfaceError(f"{model.name} is a classifier: impersonation needs --target-class.")
                self.target_class = label_index(model, spec.target_class, "--target-class")
            elif not spec.targets:
                raise AdvfaceError("--goal impersonate needs --targets PHOTO [PHOTO ...] of the person.")
            else:
                self.targets = model.embed(face_chips(list(spec.targets), model, aligner, "--targets"))
        elif classifier:
            if spec.true_class is not None:
                self.true_class = label_index(model, spec.true_class, "--true-class")
        elif spec.references:
            self.refs = model.embed(face_chips(list(spec.references), model, aligner, "--references"))

    def label(self, path: Path) -> str:
        """A photo's identity: its folder's name when that is an enrolled identity (``people/obama/3.jpg``),
        else its file name's stem without trailing digits (``obama2.jpg`` -> ``obama``)."""
        from advface.verification import label_from_filename

        if self.gallery is None:
            return ""
        if path.parent.name in self.gallery.identities:
            return path.parent.name
        return label_from_filename(path)

    def __call__(self, chips: np.ndarray, labels: list[str]):
        from advface.attacks.base import Dodge, Impersonate, Misclassify, Misidentify, TargetClass

        spec, model = self.spec, self.model
        if self.gallery is not None:
            return Misidentify(self.gallery, labels, open_set=spec.open_set)
        if self.target_class is not None:
            return TargetClass(self.target_class)
        if self.targets is not None:
            return Impersonate(self.targets, spec.threshold)
        if model.kind == "classifier":
            own = self.true_class
            return Misclassify(own if own is not None else model.embed(chips).argmax(axis=1))
        if self.refs is not None:
            return Dodge(self.refs, spec.threshold)
        return Dodge(model.embed(chips), spec.threshold, paired=True)


def _gallery(model, aligner, folder: Path, threshold: float | None, photos: list[Path]):
    """The gallery's embeddings, leaving out the attacked photos themselves (a probe is never enrolled)."""
    from advface.images import load_image
    from advface.verification import Gallery, gallery_files

    attacked = {p.resolve() for p in photos}
    chips, labels = [], []
    for f, label in gallery_files(folder):
        if f.resolve() in attacked:
            continue
        faces = aligner.align(load_image(f), model.template)
        if faces:
            chips.append(faces[0].chip)
            labels.append(label)
    if len(set(labels)) < 2:
        raise AdvfaceError(
            f"The gallery {folder} needs faces of at least 2 people besides the attacked photos. "
            f"Received: {sorted(set(labels))}."
        )
    thr = model.threshold if threshold is None else threshold
    return Gallery(model.embed(np.stack(chips)), labels, metric=model.spec.distance, threshold=thr)


def _check_config(out: Path, command: str, arguments: dict, seed: int) -> None:
    """Refuse to resume a folder made with other arguments; write config.json for a new one."""
    from advface.runs import write_config

    config = out / "config.json"
    record = json.loads(json.dumps(arguments, default=str))
    if config.is_file():
        old = json.loads(config.read_text())
        if old.get("command") != command or old.get("arguments") != record or old.get("seed") != seed:
            raise AdvfaceError(
                f"{out} holds a run with other arguments (see its config.json). Repeat them to resume, or "
                "use a new --out folder."
            )
        return
    write_config(out, command, record, seed=seed)


def _unique(paths: Sequence[str | Path]) -> list[Path]:
    from advface.images import list_images

    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise AdvfaceError(f"No such file or folder: {', '.join(missing)}. Check the --images paths.")
    seen, out = set(), []
    for p in paths:
        p = Path(p)
        for f in list_images(p) if p.is_dir() else [p]:
            if str(f) not in seen:
                seen.add(str(f))
                out.append(f)
    if not out:
        raise AdvfaceError("No photos to attack: --images needs files or folders of images.")
    return out


class _Offset:
    """Turns each batch's progress into one running count for the whole run."""

    def __init__(self, progress: ProgressCallback | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def batch(self, planned: int) -> ProgressCallback | None:
        start = self.done
        self.done += planned
        if self.progress is None:
            return None

        def callback(p: Progress) -> None:
            self.progress(Progress(start + p.step, self.total, p.stage, p.metrics))

        return callback


def _attack_all(
    out: Path,
    table,
    make_attack: Callable[[float | None], object],
    epsilons: Sequence[float | None],
    model,
    aligner,
    photos: list[Path],
    goals: _GoalMaker,
    mask,
    seed: int,
    progress: ProgressCallback | None,
    save_images: bool,
) -> None:
    from advface.images import load_image, save_image

    attacks = [make_attack(eps) for eps in epsilons]
    batch_size = attacks[0].batch_size
    # Fixed chunks of the photo list, each seeded by its first position: a resumed run attacks the
    # chunks an uninterrupted run would, with the same seeds (only a chunk cut off mid-way differs).
    batches = []
    for e, eps in enumerate(epsilons):
        for first in range(0, len(photos), batch_size):
            chunk = range(first, min(first + batch_size, len(photos)))
            todo = [i for i in chunk if _key(eps, photos[i], len(epsilons)) not in table.done]
            if todo:
                batches.append((e, first, todo))
    counter = _Offset(progress, sum(attacks[e].planned_steps() for e, _, _ in batches))
    known = set(goals.gallery.identities) if goals.gallery is not None else None
    for e, first, batch in batches:
        attack, eps = attacks[e], epsilons[e]
        callback = counter.batch(attack.planned_steps())
        # 1. Read and align; a photo that cannot be used gets a row saying why (after the attack).
        chips, kept, failed = [], [], []
        for i in batch:
            path = photos[i]
            try:
                chip = aligner.align_one(load_image(path), model.template, source=str(path)).chip
            except AdvfaceError as exc:
                failed.append((path, str(exc)))
                continue
            if known is not None and goals.label(path) not in known:
                failed.append((path, f"{goals.label(path)!r} is not enrolled in the gallery"))
                continue
            chips.append(chip)
            kept.append(i)
        result = None
        if kept:
            chips = np.stack(chips)
            labels = [goals.label(photos[i]) for i in kept]
            # 2. Attack, seeded by the chunk's position (stable across resumes).
            result = attack(
                model, chips, goals(chips, labels), mask=mask, progress=callback, seed=seed + first
            )
        for path, why in failed:
            table.add(_row(eps, path, len(epsilons), status=why))
        if result is None:
            continue
        # 3. Images, then rows (a row means its images are on disk).
        for j, i in enumerate(kept):
            path = photos[i]
            if save_images:
                stem = f"{i:04d}_{path.stem}"
                save_image(out / "images" / f"{stem}_clean.png", chips[j])
                save_image(out / "images" / f"{stem}_adversarial.png", result.images[j])
                save_image(out / "images" / f"{stem}_perturbation.png", magnify(result.images[j] - chips[j]))
            table.add(
                _row(
                    eps,
                    path,
                    len(epsilons),
                    status="ok",
                    label=labels[j],
                    clean_score=float(result.clean_scores[j]),
                    score=float(result.scores[j]),
                    clean_success=int(result.clean_success[j]),
                    success=int(result.success[j]),
                    success_8bit=int(result.success_8bit[j]),
                    linf=float(result.linf[j]),
                    l2=float(result.l2[j]),
                    steps=int(result.steps[j]),
                    queries=int(result.queries[j]),
                )
            )


def _key(eps, path: Path, count: int) -> str:
    return str(path) if count == 1 else f"{eps:.6g}|{path}"


def _row(eps, path: Path, count: int, **values) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(key=_key(eps, path, count), image=str(path), epsilon="" if eps is None else float(eps))
    row.update(values)
    return row


def _summarise(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return {"images": len(rows), "attacked": 0}

    def col(name, kind=float):
        return np.array([kind(r[name]) for r in ok])

    success = col("success", int).astype(bool)
    return {
        "images": len(rows),
        "attacked": len(ok),
        "skipped": {r["image"]: r["status"] for r in rows if r["status"] != "ok"},
        "success_rate": float(success.mean()),
        "success_rate_8bit": float(col("success_8bit", int).mean()),
        "clean_success_rate": float(col("clean_success", int).mean()),
        "median_linf_successful": float(np.median(col("linf")[success])) if success.any() else None,
        "median_l2_successful": float(np.median(col("l2")[success])) if success.any() else None,
        "mean_clean_score": float(col("clean_score").mean()),
        "mean_score": float(col("score").mean()),
        "mean_steps": float(col("steps").mean()),
        "mean_queries": float(col("queries").mean()),
    }


@dataclass(frozen=True)
class _Outcomes:
    """A run folder's rows as the arrays :mod:`advface.attacks.metrics` flags read (``(N,)`` bool)."""

    success: np.ndarray
    success_8bit: np.ndarray
    clean_success: np.ndarray


def _flags(rows: list[dict]) -> list[str]:
    """Warnings about the evaluation itself (AutoAttack-style), with the photos they concern."""
    from advface.attacks.metrics import flag_clean_success, flag_lost_after_rounding

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    outcomes = _Outcomes(
        *(np.array([r[c] == "1" for r in ok]) for c in ("success", "success_8bit", "clean_success"))
    )
    flags = [flag(outcomes) for flag in (flag_lost_after_rounding, flag_clean_success)]
    messages = [f"{f.message} Photos: {', '.join(ok[i]['image'] for i in f.images)}." for f in flags if f]
    still = [r["image"] for r in ok if float(r["linf"]) == 0.0 and r["success"] != "1"]
    if still:
        messages.append(
            f"{len(still)} photo(s) did not move at all (zero perturbation): zero or masked gradients; try a "
            f"random start, another loss, or a black-box attack (square). Photos: {', '.join(still)}."
        )
    return messages


def _plot_scores(rows: list[dict], threshold: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(ok) + 2), 3.6))
    x = np.arange(len(ok))
    ax.bar(x - 0.2, [float(r["clean_score"]) for r in ok], 0.4, label="clean")
    ax.bar(x + 0.2, [float(r["score"]) for r in ok], 0.4, label="adversarial")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xticks(x, [Path(r["image"]).stem for r in ok], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _threshold(goals: _GoalMaker, model) -> float | None:
    if goals.gallery is not None:
        return goals.gallery.threshold
    if model.kind == "classifier":
        return None
    return goals.spec.threshold if goals.spec.threshold is not None else model.threshold


def run_pixel_attack(
    out: str | Path,
    *,
    attack,
    model,
    images: Sequence[str | Path],
    goal: GoalSpec = GoalSpec(),
    mask=None,
    seed: int = 0,
    aligner=None,
    arguments: dict | None = None,
    progress: ProgressCallback | None = None,
) -> PixelRun:
    """Attack every photo in ``images`` with ``attack`` and write the run folder (module docstring).

    Args:
        out: the run folder (re-run with the same arguments to resume).
        attack: a pixel attack instance (``advface.attacks.make_attack``).
        model: a zoo name or ``FaceModel``.
        images: photos or folders of photos.
        goal: the :class:`GoalSpec`.
        mask: a region name, a mask image path or an ``(S, S)`` array (see :mod:`advface.attacks.regions`).
        seed: base seed; batch seeds are ``seed + position of the batch's first photo``.
        arguments: what config.json records (default: this call's settings).
        progress: called once per attack step, counted over the whole run.
    """
    return _run(
        out,
        "attack",
        attack=attack,
        epsilons=[attack.epsilon],
        make_attack=lambda _: attack,
        model=model,
        images=images,
        goal=goal,
        mask=mask,
        seed=seed,
        aligner=aligner,
        arguments=arguments,
        progress=progress,
    )


def run_sweep(
    out: str | Path,
    *,
    make_attack: Callable[[float], object],
    epsilons: Sequence[float],
    model,
    images: Sequence[str | Path],
    goal: GoalSpec = GoalSpec(),
    mask=None,
    seed: int = 0,
    aligner=None,
    arguments: dict | None = None,
    progress: ProgressCallback | None = None,
) -> PixelRun:
    """The success rate of an attack against epsilon: every photo at every budget (``results.tsv`` keyed
    ``epsilon|photo``), ``curve.tsv``/``curve.png``, and per photo the smallest budget that succeeded
    (``minimal.tsv``) with its median in ``summary.json``."""
    # Budgets equal to 6 digits would share rows (keys hold epsilon to 6 digits): keep one of each.
    epsilons = list({f"{float(e):.6g}": float(e) for e in sorted(float(e) for e in epsilons)}.values())
    if not epsilons or epsilons[0] <= 0:
        raise AdvfaceError(f"--epsilons must be positive budgets. Received: {epsilons}.")
    return _run(
        out,
        "attack sweep",
        attack=make_attack(epsilons[0]),
        epsilons=epsilons,
        make_attack=make_attack,
        model=model,
        images=images,
        goal=goal,
        mask=mask,
        seed=seed,
        aligner=aligner,
        arguments=arguments,
        progress=progress,
    )


def _run(
    out,
    command,
    *,
    attack,
    epsilons,
    make_attack,
    model,
    images,
    goal,
    mask,
    seed,
    aligner,
    arguments,
    progress,
) -> PixelRun:
    from advface.alignment import FaceAligner
    from advface.attacks.regions import load_mask
    from advface.runs import ResultsTable
    from advface.zoo import load_model

    out = Path(out)
    model = load_model(model) if isinstance(model, str) else model
    aligner = aligner or FaceAligner()
    photos = _unique(images)
    record = arguments or {
        "attack": repr(attack),
        "model": model.name,
        "images": [str(p) for p in photos],
        "goal": dataclasses.asdict(goal),
        "epsilons": epsilons,
        "mask": str(mask) if isinstance(mask, str | Path) else (None if mask is None else "array"),
    }
    if isinstance(mask, str | Path):
        mask = load_mask(mask, model.template.name)
    goals = _GoalMaker(goal, model, aligner, photos)
    _check_config(out, command, record, seed)  # after the checks: a refused start leaves no folder behind
    table = ResultsTable(out / "results.tsv", COLUMNS)
    sweep = len(epsilons) > 1
    start = time.perf_counter()
    _attack_all(
        out,
        table,
        make_attack,
        epsilons,
        model,
        aligner,
        photos,
        goals,
        mask,
        seed,
        progress,
        save_images=not sweep,
    )
    rows = table.rows()
    threshold = _threshold(goals, model)
    summary = {
        "command": command,
        "attack": type(attack).__name__,
        "model": model.name,
        "goal": goal.goal,
        "norm": attack.norm,
        "threshold": threshold,
        "seconds": round(time.perf_counter() - start, 1),  # this invocation's attacks (not earlier ones)
    }
    if sweep:
        summary.update(_sweep_outputs(out, rows, epsilons, attack.norm))
    else:
        summary["epsilon"] = epsilons[0]
        summary.update(_summarise(rows))
        _plot_scores(rows, threshold, out / "scores.png", f"{summary['attack']} {goal.goal} on {model.name}")
    summary["flags"] = _flags(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return PixelRun(out, summary)


def _sweep_outputs(out: Path, rows: list[dict], epsilons: list[float], norm: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advface.attacks.metrics import Curve, flag_non_monotone

    # 1. The rows as a curve: (budgets, photos) arrays.
    ok = [r for r in rows if r["status"] == "ok"]
    images = sorted({r["image"] for r in ok})
    column = {name: j for j, name in enumerate(images)}
    shape = (len(epsilons), len(images))
    grids = {name: np.zeros(shape) for name in ("success", "success_8bit", "score", norm)}
    clean = np.zeros(len(images), bool)
    for r in ok:
        e, j = int(np.argmin([abs(float(r["epsilon"]) - x) for x in epsilons])), column[r["image"]]
        for name, grid in grids.items():
            grid[e, j] = float(r[name])
        clean[j] = r["clean_success"] == "1"
    curve = Curve(
        epsilons=np.array(epsilons),
        success=grids["success"] > 0,
        success_8bit=grids["success_8bit"] > 0,
        clean_success=clean,
        scores=grids["score"],
        norms=grids[norm],
        norm=norm,
    )
    rates = curve.success_rates() if images else np.zeros(len(epsilons))
    minimal = curve.minimal_epsilons
    # 2. Tables and the plot.
    (out / "curve.tsv").write_text(
        "epsilon\tepsilon_255\tsuccess_rate\n"
        + "".join(f"{e:.6g}\t{e * 255:.4g}\t{r:.6g}\n" for e, r in zip(epsilons, rates, strict=True))
    )
    (out / "minimal.tsv").write_text(
        "image\tminimal_epsilon\n" + "".join(f"{i}\t{m:.6g}\n" for i, m in zip(images, minimal, strict=True))
    )
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    ax.plot(np.array(epsilons) * 255, rates, "o-")
    ax.set_xlabel("epsilon (x 1/255)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    plt.close(fig)
    flag = flag_non_monotone(curve)
    median = float(np.median(minimal)) if len(minimal) else np.inf
    return {
        "epsilons": epsilons,
        "success_rates": rates.tolist(),
        "median_minimal_epsilon": median if np.isfinite(median) else None,
        "monotone_flags": [flag.message] if flag else [],
    }
