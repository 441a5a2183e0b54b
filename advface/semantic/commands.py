"""``advface semantic ...``: face generators and their attribute directions on the command line.

Registered by :mod:`advface.cli`; the work is done by :mod:`advface.semantic.learn` and
:mod:`advface.generators`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  advface semantic sample --generator digiface-dcgan -n 16 --out runs/faces.png
  advface semantic directions --generator digiface-dcgan --out runs/directions
  advface semantic directions --generator stylegan-ffhq --num-samples 20000 --attributes yaw,smile
  advface semantic generate -n 200 --out runs/semantic
  advface semantic attack runs/semantic --attack pgd --instances 20
  advface semantic eval runs/semantic"""

DIRECTIONS_EXAMPLES = """examples:
  advface semantic directions --generator digiface-dcgan --out runs/directions
  advface semantic directions --generator digiface-dcgan --num-samples 2000 --attributes yaw,pitch
  advface semantic directions --generator stylegan-ffhq --box detect --out runs/ffhq-directions"""

SAMPLE_EXAMPLES = """examples:
  advface semantic sample --generator digiface-dcgan -n 16 --out runs/faces.png
  advface semantic sample --generator digiface-dcgan -n 64 --seed 3 --out runs/faces-3.png"""


GENERATE_EXAMPLES = """examples:
  advface semantic generate -n 200 --out runs/identities
  advface semantic generate -n 5000 --model arcface-r50 --images --out runs/ids-arcface
  advface semantic generate -n 100000 --chunks 50 --chunk 7 --out runs/ids-100k   # one of 50 jobs
  sbatch --array=0-49 --wrap 'advface semantic generate -n 100000 --chunks 50 --out runs/ids-100k'"""


def _box(text: str):
    from advface.errors import AdvfaceError

    if text in ("auto", "detect"):
        return text
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise AdvfaceError(
            "--box is auto, detect or left,top,right,bottom as fractions of the image. "
            f"Received: box={text!r}."
        )
    return values


def _cmd_directions(args) -> int:
    from advface.cli import _emit, _progress_bar
    from advface.generators import load_generator
    from advface.semantic.learn import learn_directions

    result = learn_directions(
        args.out or Path("runs") / f"directions-{args.generator}",
        load_generator(args.generator),
        num_samples=args.num_samples,
        attributes=[a.strip() for a in args.attributes.split(",") if a.strip()],
        ratio=args.ratio,
        seed=args.seed,
        batch_size=args.batch_size,
        box=_box(args.box),
        progress=_progress_bar("directions"),
    )
    lines = [f"{'attribute':<11} {'SVM val acc':>11} {'sweep Spearman (median / mean)':>31}"]
    for name, row in result.summary["directions"].items():
        lines.append(
            f"{name:<11} {row['svm_validation_accuracy']:>11.3f} "
            f"{row['sweep_spearman_median']:>19.3f} / {row['sweep_spearman_mean']:.3f}"
        )
    lines.append(f"run folder: {result.run_dir} (directions/, sweeps/*.png, scores.tsv, summary.json)")
    _emit(args, result.summary, "\n".join(lines))
    return 0


def _cmd_sample(args) -> int:
    import numpy as np

    from advface.errors import AdvfaceError
    from advface.generators import load_generator
    from advface.images import save_image
    from advface.semantic.directions import montage

    if args.n < 1 or args.n > 1024:
        raise AdvfaceError(f"-n must be in 1..1024. Received: n={args.n}.")
    generator = load_generator(args.generator)
    latents = generator.sample(args.n, args.seed)
    images = generator.images(latents)
    cols = int(np.ceil(np.sqrt(args.n)))
    rows = int(np.ceil(args.n / cols))
    padded = np.ones((rows * cols, *images.shape[1:]), np.float32)
    padded[: args.n] = images
    grid = montage(padded.reshape(rows, cols, *images.shape[1:]), scale=max(1, 128 // generator.resolution))
    out = save_image(args.out, grid)
    latents_file = Path(out).with_suffix(".latents.npy")
    np.save(latents_file, latents)
    print(f"{args.n} faces from {generator.name} (seed {args.seed}): {out}; latents: {latents_file}")
    return 0


_WORKERS_HELP = (
    "processes on this machine, one per local GPU (0: as many as there are GPUs); the job's chunk is split "
    "among them, so every job of an array must use the same value (default: 1)"
)


def _fanned_out(args) -> int | None:
    """Re-run this command as ``--workers`` processes (one per local GPU); None when there is one worker."""
    from advface.chunks import chunk_from_args, fan_out, local_gpus
    from advface.errors import AdvfaceError

    workers = args.workers if args.workers else max(1, len(local_gpus()))
    if workers < 0:
        raise AdvfaceError(f"--workers must be >= 0. Received: workers={args.workers}.")
    if workers == 1:
        return None
    from advface.cli import invocation

    return fan_out(invocation(), workers, chunk_from_args(args.chunks, args.chunk))


def _cmd_generate(args) -> int:
    if (code := _fanned_out(args)) is not None:
        return code
    import time

    from advface.chunks import chunk_from_args
    from advface.cli import _emit, _progress_bar
    from advface.semantic.identities import generate_identities

    chunk = chunk_from_args(args.chunks, args.chunk)
    out = args.out or Path("runs") / f"identities-{args.generator}-{args.model}"
    path = out / "identities" / f"{chunk.name}.npz"
    existed = path.is_file()
    t0 = time.perf_counter()
    generate_identities(
        out,
        args.generator,
        args.model,
        args.n,
        seed=args.seed,
        chunk=chunk,
        save_images=args.images,
        batch_size=args.batch_size,
        box=_box(args.box),
        progress=_progress_bar("generate"),
    )
    seconds = time.perf_counter() - t0
    rows = chunk.rows(args.n)
    present = len(list((out / "identities").glob(f"chunk-*-of-{chunk.count:05d}.npz")))
    summary = {
        "run_dir": str(out),
        "chunk": chunk.index,
        "chunks": chunk.count,
        "rows": [rows.start, rows.stop],
        "skipped": existed,
        "seconds": round(seconds, 2),
        "chunks_present": present,
        "complete": present == chunk.count,
    }
    what = "already there, skipped" if existed else f"{len(rows)} identities in {seconds:.1f} s"
    lines = [
        f"{chunk.name}: rows {rows.start}..{rows.stop - 1}: {what}",
        f"run folder: {out} ({present} of {chunk.count} chunks present"
        + ("; load with advface.semantic.identities.load_identities)" if present == chunk.count else ")"),
    ]
    _emit(args, summary, "\n".join(lines))
    return 0


ATTACK_EXAMPLES = """examples:
  advface semantic attack runs/semantic --attack pgd --instances 20
  advface semantic attack runs/semantic --attack fab --instances 20 --steps 10 --restarts 2 --targets 2
  advface semantic attack runs/semantic --attack pgd --chunks 250 --chunk 7      # one job of a SLURM array"""

CERTIFY_EXAMPLES = """examples:
  advface semantic certify runs/semantic --sigma 0.5 --instances 5
  advface semantic certify runs/semantic --sigma 0.5 --noise anisotropic --n 10000 --alpha 0.001
  advface semantic certify runs/semantic --sigma 0.12 --noise pixel --instances 5   # noise on the chip"""

EVAL_EXAMPLES = """examples:
  advface semantic eval runs/semantic
  advface semantic eval runs/semantic --figures 0 --json"""

# Attack hyperparameter flags: (flag, keyword, type, help); only those given are passed.
LATENT_SETTINGS = [
    ("--steps", "steps", int, "iterations per restart (default 10)"),
    ("--restarts", "restarts", int, "restarts (default 10)"),
    ("--batch-size", "batch_size", int, "identities attacked together"),
    ("--optimizer", "optimizer", str, "pgd: sgd, adam or rmsprop"),
    ("--learning-rate", "learning_rate", float, "pgd: step size (the source: 100 with SGD)"),
    ("--momentum", "momentum", float, "pgd: SGD momentum"),
    ("--loss", "loss", str, "pgd: xent, away, nearest, diff or dlr"),
    ("--targets", "targets", int, "fab: target identities (the nearest others)"),
]


def _chunk(args):
    from advface.chunks import chunk_from_args

    return chunk_from_args(args.chunks, args.chunk)


def _budget(text):
    from advface.errors import AdvfaceError

    if text is None:
        return None
    if "=" not in text:
        try:
            return float(text)
        except ValueError:
            raise AdvfaceError(
                f"--budget is a number of sigmas or name=m,... Received: budget={text!r}."
            ) from None
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise AdvfaceError(
            f"--budget is a number of sigmas or name=m,... Received: budget={text!r}."
        ) from None


def _attributes(text):
    return None if text is None else [a.strip() for a in text.split(",") if a.strip()]


def _cmd_attack(args) -> int:
    if (code := _fanned_out(args)) is not None:
        return code
    from advface.cli import _progress_bar
    from advface.semantic.workflow import run_attack

    settings = {key: getattr(args, key) for _, key, _, _ in LATENT_SETTINGS if getattr(args, key) is not None}
    path = run_attack(
        args.folder,
        args.attack,
        instances=args.instances,
        chunk=_chunk(args),
        attributes=_attributes(args.attributes),
        budget=_budget(args.budget),
        mode=args.mode,
        seed=args.seed,
        name=args.name,
        settings=settings,
        progress=_progress_bar(f"{args.attack}"),
    )
    print(f"{path} written; merge and evaluate with: advface semantic eval {args.folder}")
    return 0


def _cmd_certify(args) -> int:
    if (code := _fanned_out(args)) is not None:
        return code
    import sys
    import warnings

    from advface.cli import _progress_bar
    from advface.semantic.workflow import run_certification

    with warnings.catch_warnings():  # restores the warning machinery when the certification ends
        shown = warnings.showwarning

        def one_line(message, category, filename, lineno, file=None, line=None):
            if "advface" in Path(filename).parts:  # ours, e.g. "n is too small to certify anything"
                print(f"advface: warning: {message}", file=sys.stderr)
            else:  # other libraries' warnings keep their own form
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line
        path = run_certification(
            args.folder,
            sigma=args.sigma,
            noise=args.noise,
            n0=args.n0,
            n=args.n,
            alpha=args.alpha,
            instances=args.instances,
            chunk=_chunk(args),
            attributes=_attributes(args.attributes),
            budget=_budget(args.budget),
            seed=args.seed,
            batch_size=args.batch_size,
            name=args.name,
            progress=_progress_bar("certify"),
        )
    print(f"{path} written; merge and evaluate with: advface semantic eval {args.folder}")
    return 0


def _cmd_eval(args) -> int:
    from advface.cli import _emit
    from advface.semantic.workflow import evaluate, ranking_text

    summary = evaluate(args.folder, figures=args.figures)
    lines = []
    for name, a in summary["attacks"].items():
        lines.append(
            f"{name}: successes {a['successes']}, instances {a['instances']}, rate {100 * a['rate']:.2f} %, "
            f"avg_mag {a['avg_mag']:.3f}; ranking {ranking_text(a)}"
            + (f" (p {', '.join(f'{p:.2E}' for p in a['p_values'])})" if a["p_values"] else "")
            + (
                ""
                if a["chunks"] == a["expected_chunks"]
                else f" [{a['chunks']} of {a['expected_chunks']} chunks]"
            )
        )
    for name, c in summary["certificates"].items():
        lines.append(
            f"{name}: certified {c['certified']} of {c['instances']} (abstained {c['abstained']}), "
            f"median radius {c['median_radius']:.3f} ({c['radius_unit']}), "
            f"{c['mean_seconds']:.1f} s per identity"
        )
    lines.append(f"written: {args.folder}/summary.json, acc_vs_pert.png, attacks/*/results.txt, certify/*/")
    _emit(
        args,
        summary,
        "\n".join(lines) if len(lines) > 1 else "nothing to evaluate yet: run semantic attack or certify",
    )
    return 0


def _add_run_verbs(verbs) -> None:
    def common(q, chunked=True):
        q.add_argument(
            "folder", metavar="RUN", type=Path, help="run folder made by `advface semantic generate`"
        )
        q.add_argument("--instances", type=int, help="the first N identities (default: all)")
        q.add_argument("--attributes", help="comma-separated directions (default: the generator's five)")
        q.add_argument(
            "--budget",
            help="sigmas of every direction, or name=m,... in coefficient units (default: 1 sigma; for "
            "stylegan-ffhq the source's budgets)",
        )
        q.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
        q.add_argument("--name", help="sub-folder name (default: from the method)")
        q.add_argument(
            "--chunks",
            type=int,
            help="split the identities into N chunks (default: 1, or the SLURM array size)",
        )
        q.add_argument(
            "--chunk", type=int, help="this job's chunk, 0-based (default: $SLURM_ARRAY_TASK_ID, else 0)"
        )
        q.add_argument("--workers", type=int, default=1, help=_WORKERS_HELP)

    q = verbs.add_parser(
        "attack",
        help="latent PGD or FAB-t on generated identities (chunked, resumable)",
        description="Move each identity's face along attribute directions within per-attribute budgets "
        "(the ellipsoid delta^T M delta <= 1, M = diag(1/m^2)) until 1:N identification (or verification) "
        "fails. PGD keeps the smallest successful perturbation and tests its last step; FAB-t is re-derived "
        "for the M-norm and reports the smallest it finds. Writes attacks/NAME/chunk-*.npz.",
        epilog=ATTACK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(q)
    q.add_argument("--attack", choices=["pgd", "fab"], default="pgd", help="pgd or fab (FAB-t)")
    q.add_argument("--mode", choices=["identify", "verify"], default="identify", help="success criterion")
    for flag, key, kind, help_ in LATENT_SETTINGS:
        q.add_argument(flag, dest=key, type=kind, help=help_)
    q.set_defaults(run=_cmd_attack)

    q = verbs.add_parser(
        "certify",
        help="randomized-smoothing certificates of identities (Cohen et al.)",
        description="Certify that 1:N identification of each identity cannot change within a radius: N0 "
        "selection samples, N estimation samples, a one-sided Clopper-Pearson bound at alpha, abstain "
        "below 1/2. Noise on the attribute coefficients (isotropic, anisotropic with covariance sigma^2 "
        "M^-1, or the source's anisotropic-source) or on the aligned chip (pixel). Writes "
        "certify/NAME/chunk-*.tsv.",
        epilog=CERTIFY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(q)
    q.add_argument("--sigma", type=float, required=True, help="noise level")
    q.add_argument(
        "--noise", choices=["isotropic", "anisotropic", "anisotropic-source", "pixel"], default="isotropic"
    )
    q.add_argument("--n0", type=int, default=100, help="selection samples (default: 100)")
    q.add_argument("--n", type=int, default=10_000, help="estimation samples (default: 10000)")
    q.add_argument("--alpha", type=float, default=0.001, help="failure probability (default: 0.001)")
    q.add_argument("--batch-size", type=int, default=500, help="noisy samples per forward pass")
    q.set_defaults(run=_cmd_certify)

    q = verbs.add_parser(
        "eval",
        help="merge chunks: rates, magnitudes, attribute ranking, p-values, plots, figures",
        description="Merge every chunk present (missing chunks are reported) and write results.txt per "
        "attack (successes, instances, rate, mean magnitude, the attribute-importance ranking with its "
        "p-values), acc_vs_pert.png, one figure per success, certified_accuracy.png and summary.json.",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("folder", metavar="RUN", type=Path, help="run folder")
    q.add_argument("--figures", type=int, default=20, help="success figures per attack (default: 20)")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(run=_cmd_eval)


def _add_box(q) -> None:
    q.add_argument(
        "--box",
        default="auto",
        help="where faces sit: auto (the generator's registered box, else detect), detect, or "
        "left,top,right,bottom fractions",
    )


def add_parser(command) -> None:
    """Register ``advface semantic`` on the main parser (``command(name, help)`` makes a subparser)."""
    from advface.generators import generator_names
    from advface.semantic.scorers import ATTRIBUTES

    p = command("semantic", "Face generators, attribute directions and semantic robustness")
    p.epilog = EXAMPLES
    verbs = p.add_subparsers(dest="semantic_command", required=True, metavar="VERB")

    q = verbs.add_parser(
        "directions",
        help="learn attribute directions for a generator (InterFaceGAN's SVM procedure)",
        description="Sample latents, render them, measure yaw, pitch, smile, mouth opening, eye opening, "
        "face size and brightness from dlib's landmarks, fit one linear SVM per attribute and save its unit "
        "normal with its validation accuracy; then check each direction on -3..+3 sigma sweeps (Spearman "
        "correlation of offset and measurement) and draw a montage per direction. Re-run the same command "
        "to resume.",
        epilog=DIRECTIONS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--generator", default="digiface-dcgan", choices=generator_names(), help="the generator")
    q.add_argument("--out", type=Path, help="run folder (default: runs/directions-GENERATOR)")
    q.add_argument(
        "--num-samples", type=int, default=10_000, help="latents rendered and scored (default: 10000)"
    )
    q.add_argument(
        "--attributes",
        default=",".join(ATTRIBUTES),
        help=f"comma-separated (default: {','.join(ATTRIBUTES)})",
    )
    q.add_argument("--ratio", type=float, default=0.1, help="share of samples per SVM class (default: 0.1)")
    q.add_argument("--seed", type=int, default=0, help="latent seed (default: 0)")
    q.add_argument("--batch-size", type=int, default=250, help="samples rendered per chunk (default: 250)")
    _add_box(q)
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(run=_cmd_directions)

    q = verbs.add_parser(
        "sample",
        help="render a grid of random faces from a generator",
        description="Draw -n latents from --seed, render them and save one grid image (and the latents).",
        epilog=SAMPLE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--generator", default="digiface-dcgan", choices=generator_names(), help="the generator")
    q.add_argument("-n", type=int, default=16, help="number of faces (default: 16)")
    q.add_argument("--seed", type=int, default=0, help="latent seed (default: 0)")
    q.add_argument(
        "--out", type=Path, default=Path("runs/faces.png"), help="grid image (default: runs/faces.png)"
    )
    q.set_defaults(run=_cmd_sample)

    q = verbs.add_parser(
        "generate",
        help="generate identities and their gallery (chunked, resumable)",
        description="Draw -n latents from --seed, render them, align each clean face for the model's "
        "template and embed it: the identities and gallery that semantic attacks and certification use. "
        "The run folder holds config.json and identities/chunk-I-of-N.npz (rows, latents, alignments, "
        "embeddings); --chunks/--chunk (default $SLURM_ARRAY_TASK_COUNT/$SLURM_ARRAY_TASK_ID) make one "
        "share of the rows. Re-run the same command to resume: chunks already written are skipped.",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("-n", type=int, required=True, help="identities in the whole run (all chunks)")
    q.add_argument("--generator", default="digiface-dcgan", choices=generator_names(), help="the generator")
    q.add_argument(
        "--model", default="dlib-resnet", help="embedding model from the zoo (default: dlib-resnet)"
    )
    q.add_argument("--out", type=Path, help="run folder (default: runs/identities-GENERATOR-MODEL)")
    q.add_argument("--seed", type=int, default=0, help="latent seed (default: 0)")
    q.add_argument("--images", action="store_true", help="also save the clean renders as images/ROW.png")
    q.add_argument(
        "--chunks", type=int, help="split the rows into N chunks (default: 1, or the SLURM array size)"
    )
    q.add_argument("--chunk", type=int, help="0-based chunk to make (default: $SLURM_ARRAY_TASK_ID, else 0)")
    q.add_argument("--workers", type=int, default=1, help=_WORKERS_HELP)
    q.add_argument("--batch-size", type=int, default=64, help="identities per batch (default: 64)")
    _add_box(q)
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(run=_cmd_generate)

    _add_run_verbs(verbs)
