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
  advface semantic directions --generator stylegan-ffhq --num-samples 20000 --attributes yaw,smile"""

DIRECTIONS_EXAMPLES = """examples:
  advface semantic directions --generator digiface-dcgan --out runs/directions
  advface semantic directions --generator digiface-dcgan --num-samples 2000 --attributes yaw,pitch
  advface semantic directions --generator stylegan-ffhq --box detect --out runs/ffhq-directions"""

SAMPLE_EXAMPLES = """examples:
  advface semantic sample --generator digiface-dcgan -n 16 --out runs/faces.png
  advface semantic sample --generator digiface-dcgan -n 64 --seed 3 --out runs/faces-3.png"""


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
    q.add_argument(
        "--box",
        default="auto",
        help="where faces sit: auto (the generator's registered box, else detect), detect, or "
        "left,top,right,bottom fractions",
    )
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
