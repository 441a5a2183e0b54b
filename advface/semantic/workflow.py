"""Semantic robustness runs: latent attacks and certification of generated identities, chunked for clusters.

A run folder starts with ``advface semantic generate`` (identities: latents, alignments, gallery
embeddings). Attacks and certification then write into it, one file per chunk:

- ``attacks/<attack>/config.json`` and ``attacks/<attack>/chunk-IIIII-of-NNNNN.npz`` (rows, deltas,
  success, magnitudes, predicted and true identities), plus ``logs/<chunk>.txt`` in the source's format;
- ``certify/<name>/config.json`` and ``certify/<name>/chunk-IIIII-of-NNNNN.tsv``: one row per identity
  (idx, label, predict, correct, radius, time and the other radii), flushed row by row;
- ``advface semantic eval RUN`` merges whatever chunks exist: ``results.txt`` (successes, instances, rate,
  mean magnitude, attribute-importance ranking and p-values), ``acc_vs_pert.png``, one figure per success,
  ``certified_accuracy.png`` and ``summary.json``.

Every chunk is idempotent: a chunk whose file exists is skipped, an attack chunk is written atomically
when it is complete, and a certification chunk resumes at its first identity without a row. Seeds
depend only on the identity row, so any chunking gives the same merged results.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advface.chunks import Chunk, load_chunks, save_npz_atomic
from advface.errors import AdvfaceError
from advface.progress import ProgressCallback
from advface.runs import ResultsTable, write_config

ATTACKS = ("pgd", "fab")
NOISES = ("isotropic", "anisotropic", "anisotropic-source", "pixel")
# Attributes attacked by default, per generator; budgets are in units of each direction's sigma unless the
# generator has the source's own budgets (StyleGAN-FFHQ, raw W units: algorithms.md 2.4).
DEFAULT_ATTRIBUTES = {
    "digiface-dcgan": ("yaw", "pitch", "smile", "mouth", "eyes"),
    "stylegan-ffhq": ("age", "eyeglasses", "gender", "pose", "smile"),
}
SOURCE_BUDGETS = {"stylegan-ffhq": {"age": 0.5, "eyeglasses": 0.5, "gender": 0.2, "pose": 0.5, "smile": 0.8}}
CERTIFY_COLUMNS = [
    "idx",
    "label",
    "predict",
    "correct",
    "radius",
    "radius_m",
    "equal_volume_radius",
    "p_lower",
    "time",
]


@dataclass(frozen=True)
class Setup:
    """Everything an attack or certificate needs, rebuilt from a run folder.

    Attributes:
        identities: the run's identities (gallery = their embeddings).
        pipeline: latents -> embeddings.
        directions: the attribute directions attacked.
        ellipsoid: the budget region over their coefficients.
        budgets: ``{attribute: m}`` in coefficient units.
        objective: the attacked objective (identify or verify mode).
    """

    identities: object
    pipeline: object
    directions: object
    ellipsoid: object
    budgets: dict
    objective: object


def budgets_for(directions, attributes, budget: float | dict | None) -> dict:
    """``{attribute: m}``: the source's budgets for StyleGAN-FFHQ, else ``budget`` sigmas of each direction.

    Args:
        directions: the generator's :class:`~advface.semantic.directions.Directions`.
        attributes: names attacked.
        budget: None (defaults), one number (sigmas of every direction), or ``{name: m}`` (coefficient units).
    """
    if isinstance(budget, dict):
        missing = [a for a in attributes if a not in budget]
        if missing:
            raise AdvfaceError(
                f"No budget for {missing}. Received: budgets={budget}. Give one per attribute."
            )
        out = {a: float(budget[a]) for a in attributes}
    elif budget is None and directions.generator in SOURCE_BUDGETS:
        out = {a: SOURCE_BUDGETS[directions.generator].get(a, 0.5) for a in attributes}
    else:
        scale = 1.0 if budget is None else float(budget)
        out = {a: scale * float(directions.sigmas[directions.index(a)]) for a in attributes}
    bad = {a: m for a, m in out.items() if not m > 0}
    if bad:
        raise AdvfaceError(f"Budgets must be positive. Received: {bad}.")
    return out


def build_setup(run, *, attributes=None, budget=None, mode: str = "identify", threshold=None) -> Setup:
    """Rebuild generator, model, directions, budget and objective for the identities in ``run``."""
    from advface.generators import load_generator
    from advface.semantic.budget import Ellipsoid
    from advface.semantic.directions import load_directions
    from advface.semantic.identities import load_identities
    from advface.semantic.pipeline import FacePipeline, SemanticObjective
    from advface.zoo import load_model

    if mode not in ("identify", "verify"):
        raise AdvfaceError(f"Unknown mode. Received: mode={mode!r}. Known: identify, verify.")
    identities = load_identities(run)
    all_directions = load_directions(identities.generator)
    attributes = tuple(attributes or DEFAULT_ATTRIBUTES.get(identities.generator, all_directions.names))
    directions = all_directions.subset(attributes)
    budgets = budgets_for(all_directions, attributes, budget)
    ellipsoid = Ellipsoid.from_budgets([budgets[a] for a in attributes], names=attributes)
    pipeline = FacePipeline(
        load_generator(identities.generator), load_model(identities.model), directions=directions
    )
    objective = SemanticObjective(pipeline, identities, mode=mode, threshold=threshold)
    return Setup(identities, pipeline, directions, ellipsoid, budgets, objective)


def _check_config(folder: Path, command: str, arguments: dict, seed: int) -> None:
    """Write ``config.json`` once (the first of many parallel chunk jobs wins, atomically: a hard link of a
    complete file); later chunks must share the arguments."""
    config = folder / "config.json"
    arguments = json.loads(json.dumps(arguments, default=str))
    if not config.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".config-{os.getpid()}-{secrets.token_hex(4)}"
        write_config(staging, command, arguments, seed=seed)
        try:
            os.link(staging / "config.json", config)  # fails if another job got there first
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not config.exists():
                os.replace(staging / "config.json", config)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    try:
        previous = json.loads(config.read_text()).get("arguments", {})
    except (OSError, ValueError) as exc:
        raise AdvfaceError(
            f"{config} is unreadable ({exc}). Delete the folder {folder} and run again."
        ) from None
    if previous != arguments:
        changed = sorted(k for k in set(previous) | set(arguments) if previous.get(k) != arguments.get(k))
        raise AdvfaceError(
            f"{folder} holds chunks made with other arguments ({', '.join(changed)} differ). Use the "
            "same arguments for every chunk, or another --name."
        )


def _fingerprint(arguments: dict) -> str:
    """A short hash of a folder's arguments, stored in every chunk so a merge never mixes two settings."""
    text = json.dumps(json.loads(json.dumps(arguments, default=str)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _instances(setup: Setup, instances: int | None, chunk: Chunk) -> int:
    total = len(setup.identities.rows)
    instances = total if instances is None else instances
    if not isinstance(instances, int) or not 0 < instances <= total:
        raise AdvfaceError(
            f"`instances` must be in 1..{total} (the run's identities). Received: instances={instances!r}."
        )
    if chunk.count > instances:
        raise AdvfaceError(
            f"{chunk.count} chunks for {instances} identities would leave chunks empty. Received: "
            f"chunks={chunk.count}, instances={instances}. Use at most {instances} chunks."
        )
    return instances


def make_attack(name: str, ellipsoid, **settings):
    """``"pgd"`` -> :class:`LatentPGD`, ``"fab"`` -> :class:`LatentFAB` with ``settings``."""
    from advface.attacks.latent import LatentFAB, LatentPGD

    classes = {"pgd": LatentPGD, "fab": LatentFAB}
    if name not in classes:
        raise AdvfaceError(f"Unknown latent attack. Received: attack={name!r}. Known: pgd, fab.")
    try:
        return classes[name](ellipsoid=ellipsoid, **settings)
    except TypeError as exc:
        raise AdvfaceError(f"{name} does not take these settings ({exc}). Received: {settings}.") from None


def run_attack(
    run,
    attack: str,
    *,
    instances: int | None = None,
    chunk: Chunk | None = None,
    attributes=None,
    budget=None,
    mode: str = "identify",
    seed: int = 0,
    name: str | None = None,
    settings: dict | None = None,
    setup: Setup | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Attack the identities ``chunk.rows(instances)`` of ``run``; returns the chunk file (made or found).

    Args:
        run: a run folder made by ``advface semantic generate``.
        attack: ``"pgd"`` or ``"fab"``.
        instances: attack the first ``instances`` identities (default: all); the gallery is all of them.
        chunk: which share of those identities this job attacks (default: all).
        attributes, budget: see :func:`budgets_for`.
        mode: ``"identify"`` (success: the nearest gallery identity is another) or ``"verify"``.
        seed: attack seed (each identity's randomness depends only on it and its row).
        name: sub-folder of ``attacks/`` (default: the attack's name).
        settings: the attack's hyperparameters (steps, restarts, ...).
        setup: a prebuilt :class:`Setup` (saves rebuilding it between attacks on the same run).
    """
    run = Path(run)
    chunk = chunk or Chunk(0, 1)
    settings = dict(settings or {})
    setup = setup or build_setup(run, attributes=attributes, budget=budget, mode=mode)
    instances = _instances(setup, instances, chunk)
    folder = run / "attacks" / (name or attack)
    arguments = {
        "attack": attack,
        "instances": instances,
        "chunks": chunk.count,
        "attributes": list(setup.ellipsoid.names),
        "budgets": setup.budgets,
        "mode": mode,
        "seed": seed,
        # The batch size changes speed, not results (each row's randomness depends on its row only).
        "settings": {k: v for k, v in settings.items() if k != "batch_size"},
    }
    attacker = make_attack(attack, setup.ellipsoid, **settings)
    _check_config(folder, f"semantic attack {attack}", arguments, seed)
    target = folder / f"{chunk.name}.npz"
    if target.is_file():
        return target
    rows = np.asarray(chunk.rows(instances), dtype=np.int64)
    result = attacker(setup.objective, rows, seed=seed, progress=progress)
    save_npz_atomic(
        target,
        rows=result.rows,
        deltas=result.deltas,
        success=result.success,
        magnitudes=result.magnitudes,
        predicted=result.predicted,
        labels=result.labels,
        clean_predicted=result.clean_predicted,
        seconds=np.float64(result.seconds),
        fingerprint=np.array(_fingerprint(arguments)),
    )
    successful = result.magnitudes[result.success]
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "logs" / f"{chunk.name}.txt").write_text(
        f"successes {int(result.success.sum())}\ninstances {len(rows)}\n"
        f"avg_mags {float(successful.mean()) if successful.size else float('nan'):.4f}\n"
        f"seconds {result.seconds:.1f}\n"
    )
    return target


def run_certification(
    run,
    *,
    sigma: float,
    noise: str = "isotropic",
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    instances: int | None = None,
    chunk: Chunk | None = None,
    attributes=None,
    budget=None,
    seed: int = 0,
    batch_size: int = 500,
    name: str | None = None,
    setup: Setup | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Certify identities of ``run`` by randomized smoothing (Cohen et al. 2019); returns the chunk's TSV.

    Latent smoothing adds noise to the attribute coefficients around delta = 0 (``isotropic``,
    ``anisotropic`` with covariance sigma^2 M^-1, or the source's ``anisotropic-source``); ``pixel``
    smooths identification in pixel space, with Gaussian noise on the aligned chip. The base classifier
    is 1:N identification against the run's gallery.
    """
    from advface.certification.smoothing import min_trials

    if noise not in NOISES:
        raise AdvfaceError(f"Unknown noise. Received: noise={noise!r}. Known: {', '.join(NOISES)}.")
    run = Path(run)
    chunk = chunk or Chunk(0, 1)
    setup = setup or build_setup(run, attributes=attributes, budget=budget)
    instances = _instances(setup, instances, chunk)
    folder = run / "certify" / (name or f"{noise}-sigma{sigma:g}")
    arguments = {
        "sigma": sigma,
        "noise": noise,
        "n0": n0,
        "n": n,
        "alpha": alpha,
        "instances": instances,
        "chunks": chunk.count,
        "attributes": list(setup.ellipsoid.names),
        "budgets": setup.budgets,
        "seed": seed,
    }
    _check_config(folder, "semantic certify", arguments, seed)
    if n < min_trials(alpha):
        warnings.warn(
            f"n={n} samples cannot certify anything at alpha={alpha}: even {n} of {n} votes give a lower "
            f"bound below 1/2. Use n >= {min_trials(alpha)} (every identity will abstain).",
            stacklevel=2,
        )
    table = ResultsTable(folder / f"{chunk.name}.tsv", CERTIFY_COLUMNS)
    for row in chunk.rows(instances):
        if str(row) in table.done:
            continue
        label, certificate = certify_row(
            setup,
            row,
            sigma=sigma,
            noise=noise,
            n0=n0,
            n=n,
            alpha=alpha,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        table.add(
            {
                "idx": row,
                "label": label,
                "predict": certificate.predicted,
                "correct": int(certificate.predicted == label),
                "radius": float(certificate.radius),
                "radius_m": float("nan") if certificate.radius_m is None else float(certificate.radius_m),
                "equal_volume_radius": float("nan")
                if certificate.equal_volume_radius is None
                else float(certificate.equal_volume_radius),
                "p_lower": float(certificate.p_lower),
                "time": float(certificate.seconds),
            }
        )
    return table.path


def certify_row(
    setup: Setup,
    row: int,
    *,
    sigma: float,
    noise: str = "isotropic",
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    seed: int = 0,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
):
    """Certify one identity (gallery row ``row``) as :func:`run_certification` does; returns
    ``(label, Certificate)``. Its randomness depends on ``(seed, row)`` only, so the launcher certifying one
    identity gets the row the batch run writes."""
    from advface.certification.smoothing import Smooth

    if noise not in NOISES:
        raise AdvfaceError(f"Unknown noise. Received: noise={noise!r}. Known: {', '.join(NOISES)}.")
    objective, identities = setup.objective, setup.identities
    row = int(row)
    label = int(objective.labels(np.array([row]))[0])
    if noise == "pixel":
        position = int(identities.positions(np.array([row]))[0])
        chip = setup.pipeline.chips(
            identities.latents[position : position + 1], identities.alignments[position : position + 1]
        )
        gallery, model = identities.embeddings, setup.pipeline.model

        def classify(chips):
            return _nearest(model, chips, gallery)

        smooth = Smooth(classify, len(gallery), sigma=sigma, noise="isotropic", batch_size=batch_size)
        point = np.asarray(chip)[0]
    else:

        def classify(deltas):  # one forward pass per batch of noisy samples (Smooth's batch_size)
            rows = np.full(len(deltas), row, np.int32)
            return objective.predict(deltas.astype(np.float32), rows, batch_size=len(deltas))

        smooth = Smooth(
            classify,
            objective.num_classes,
            sigma=sigma,
            noise=noise,
            ellipsoid=setup.ellipsoid,
            batch_size=batch_size,
        )
        point = np.zeros(setup.ellipsoid.k, np.float32)
    certificate = smooth.certify(point, n0=n0, n=n, alpha=alpha, seed=_row_seed(seed, row), progress=progress)
    return label, certificate


def _row_seed(seed: int, row: int) -> int:
    """One identity's seed: a function of ``(seed, row)`` only, and distinct across both."""
    return int(np.random.SeedSequence([seed, int(row)]).generate_state(1)[0])


def _nearest(model, chips, gallery) -> np.ndarray:
    """Index of the nearest gallery embedding for each chip (1:N identification)."""
    from advface.verification import pairwise_distances

    embeddings = model.embed(np.clip(chips, 0.0, 1.0))
    return np.argmin(pairwise_distances(embeddings, gallery, model.spec.distance), axis=1)


def evaluate(run, *, figures: int = 20, progress: ProgressCallback | None = None) -> dict:
    """Merge every attack and certification chunk of ``run`` and write the evaluation files.

    Args:
        run: the run folder.
        figures: at most this many success figures per attack.

    Returns:
        The summary written to ``run/summary.json``.
    """
    from advface.semantic import evaluate as ev

    run = Path(run)
    summary: dict = {"attacks": {}, "certificates": {}}
    curves = {}
    t0 = time.perf_counter()
    setups: dict = {}
    for folder in sorted(p for p in (run / "attacks").glob("*") if (p / "config.json").is_file()):
        chunks = load_chunks(folder)
        if not chunks:
            continue
        config = json.loads((folder / "config.json").read_text())["arguments"]
        foreign = [i for i, c in enumerate(chunks) if str(c.get("fingerprint", "")) != _fingerprint(config)]
        if foreign:
            raise AdvfaceError(
                f"{folder}: {len(foreign)} chunk file(s) were made with other arguments than its "
                "config.json. Move them away (or delete the folder) and run the attack again."
            )
        keys = ("rows", "deltas", "success", "magnitudes", "predicted", "labels")
        merged = {k: np.concatenate([np.atleast_1d(c[k]) for c in chunks]) for k in keys}
        names, budgets = config["attributes"], config["budgets"]
        result = ev.summarise(merged["success"], merged["magnitudes"])
        successful = merged["deltas"][merged["success"]]
        # One attribute has no ranking; fewer than two successes give none either.
        ranking = (
            ev.rank_attributes(successful, [budgets[a] for a in names], names)
            if len(successful) >= 2 and len(names) >= 2
            else None
        )
        ev.write_results(folder, result, ranking)
        curves[folder.name] = ev.accuracy_vs_perturbation(merged["success"], merged["magnitudes"])
        summary["attacks"][folder.name] = {
            "successes": result.successes,
            "instances": result.instances,
            "rate": result.rate,
            "avg_mag": result.avg_mag,
            "ranking": list(ranking.order) if ranking else [],
            "unranked": list(ranking.unranked) if ranking else [],
            "p_values": list(ranking.p_values) if ranking else [],
            "friedman": list(ranking.friedman) if ranking else [],  # each elimination step's p-value
            "chunks": len(chunks),
            "expected_chunks": config["chunks"],
        }
        if figures:
            key = (tuple(names), json.dumps(budgets, sort_keys=True), config["mode"])
            if key not in setups:
                setups[key] = build_setup(run, attributes=names, budget=budgets, mode=config["mode"])
            _figures(folder, setups[key], merged, figures, config["mode"])
    if curves:
        ev.plot_accuracy_vs_perturbation(run / "acc_vs_pert.png", curves)
    for folder in sorted(p for p in (run / "certify").glob("*") if (p / "config.json").is_file()):
        config = json.loads((folder / "config.json").read_text())["arguments"]
        rows, files = [], sorted(folder.glob("chunk-*.tsv"))
        for path in files:
            rows += ResultsTable(path, CERTIFY_COLUMNS).rows()
        if not rows:
            continue
        repeated = len(rows) - len({r["idx"] for r in rows})
        if repeated:
            raise AdvfaceError(
                f"{folder}: {repeated} identities certified in more than one chunk file (chunk files of "
                "different splits?). Keep the files of one split and run eval again."
            )
        summary["certificates"][folder.name] = _certified_summary(
            folder, rows, pixel=config["noise"] == "pixel"
        )
        summary["certificates"][folder.name] |= {"chunks": len(files), "expected_chunks": config["chunks"]}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (run / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def ranking_text(attack: dict) -> str:
    """``yaw>pitch=smile``: an attack's ranked attributes (from :func:`evaluate`'s summary), then those the
    tests could not separate; ``NoneFound`` when none was ranked."""
    if not attack["ranking"]:
        return "NoneFound"
    return ">".join(part for part in (">".join(attack["ranking"]), "=".join(attack["unranked"])) if part)


def _figures(folder: Path, setup: Setup, merged: dict, limit: int, mode: str) -> None:
    """One figure per success: original, adversarial (with its M-norm) and the identity it is taken for
    (in verification mode: the person's own gallery face, which the adversarial no longer matches)."""
    from advface.semantic import evaluate as ev

    identities, pipeline = setup.identities, setup.pipeline
    for i in np.flatnonzero(merged["success"])[:limit]:
        row, delta = int(merged["rows"][i]), merged["deltas"][i]
        own = int(identities.positions(np.array([row]))[0])
        latent = identities.latents[own : own + 1]
        adversarial = np.asarray(pipeline.perturb(latent, delta[None].astype(np.float32)))
        if mode == "verify":
            matched, name, labels = (
                latent,
                f"ori_{row}_adv_verify.png",
                ("original", "adversarial", "enrolled"),
            )
        else:
            match = int(merged["predicted"][i])
            position = int(identities.positions(np.array([match]))[0])
            matched, name = identities.latents[position : position + 1], f"ori_{row}_adv_{match}.png"
            labels = ("original", "adversarial", f"taken for identity {match}")
        images = pipeline.generator.images(np.concatenate([latent, adversarial, matched]))
        ev.success_figure(
            folder / "figs" / name,
            images[0],
            images[1],
            images[2],
            magnitude=float(merged["magnitudes"][i]),
            labels=labels,
        )


def _certified_summary(folder: Path, rows: list[dict], *, pixel: bool) -> dict:
    from advface.semantic import evaluate as ev

    correct = np.array([int(r["correct"]) for r in rows], bool)
    # Latent noise: the radius in the attacks' M-norm; pixel noise: the L2 radius on the chip.
    radius = np.array([float(r["radius"] if pixel else r["radius_m"]) for r in rows])
    xlabel = "radius (L2 on the chip, pixels in [0, 1])" if pixel else "radius (M-norm)"
    ev.plot_certified_accuracy(
        folder / "certified_accuracy.png", correct, radius, xlabel=xlabel, title=folder.name
    )
    return {
        "instances": len(rows),
        "certified": int(correct.sum()),
        "abstained": int(sum(int(r["predict"]) == -1 for r in rows)),
        "median_radius": float(np.median(radius[correct])) if correct.any() else 0.0,
        "radius_unit": "L2 on the chip" if pixel else "M-norm",
        "mean_seconds": float(np.mean([float(r["time"]) for r in rows])),
    }
