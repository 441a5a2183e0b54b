"""``advface glasses ...``: the eyeglass attack's command line (data, train, sample, template, dodge,
impersonate, check). Registered by :mod:`advface.cli`; the work is done by the library modules."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError

EXAMPLES = {
    "data": """examples:
  advface glasses data --out data/eyeglasses -n 12800
  advface glasses data --out /tmp/frames -n 500 --seed 3""",
    "train": """examples:
  advface glasses data --out data/eyeglasses -n 12800
  advface glasses train --data data/eyeglasses --out runs/glasses-dcgan --epochs 25
  advface glasses train --data AGN/eyeglasses/ --out runs/agn --limit 8000   # the original dataset""",
    "sample": """examples:
  advface glasses sample --out grid.png
  advface glasses sample -n 12 --seed 7 --out grid.png --canvases frames/""",
    "template": """examples:
  advface glasses template --out marked-frames            # print, cut out, wear, photograph
  advface glasses template --out marked-frames --width-mm 150""",
    "dodge": """examples:
  advface glasses dodge --images data/samples/obama.jpg data/samples/obama2.jpg data/samples/obama3.jpg \\
      --model dlib-resnet --out runs/dodge
  advface glasses dodge --images me/*.jpg --model vgg10 --true-class 3 --out runs/dodge-vgg
  advface glasses dodge --images wearing-marked-frames/*.jpg --physical --out runs/physical""",
    "impersonate": """examples:
  advface glasses impersonate --images data/samples/obama*.jpg --target data/samples/biden.jpg \\
      --model dlib-resnet --out runs/impersonate
  advface glasses impersonate --images me/*.jpg --model vgg10 --target-class George_Clooney --out runs/imp""",
    "check": """examples:
  advface glasses check --camera 0 --references me/*.jpg            # dodging, live
  advface glasses check --video wearing.mp4 --references me/*.jpg --out runs/check
  advface glasses check --video wearing.mp4 --target biden.jpg --goal impersonate""",
}


def add_parser(command) -> None:
    """Register ``advface glasses VERB`` on the main parser (``command(name, help)`` makes a subparser)."""
    from advface import cli

    p = command("glasses", "Adversarial eyeglasses (AGN): data, GAN training, attacks, printing, live check")
    verbs = p.add_subparsers(dest="glasses_command", required=True, metavar="VERB")

    def verb(name: str, help_: str, description: str | None = None) -> argparse.ArgumentParser:
        return verbs.add_parser(
            name,
            help=help_,
            description=description or help_,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    q = verb(
        "data",
        "write procedural eyeglass frames (AGN dataset layout) to a folder",
        "Render realistic eyeglass-frame textures (solid, two-tone, gradient, tortoiseshell, patterned; "
        "varied rim thickness) as 224x224 PNGs with the frame on black, the AGN dataset's layout. "
        "Re-run to resume.",
    )
    q.add_argument("--out", required=True, type=Path, help="folder to write")
    q.add_argument("-n", "--count", type=int, default=12800, help="frames to write (default: 12800)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(run=_cmd_data)

    q = verb(
        "train",
        "train the eyeglass DCGAN and store it in saved-models/",
        "Train the AGN eyeglass DCGAN (G: 633,403 parameters, D with minibatch discrimination: "
        "3,809,801) on a folder of frames. Checkpoints every epoch: re-run the same command to resume. "
        "Stores eyeglass-generator/eyeglass-discriminator in saved-models/ when done.",
    )
    q.add_argument(
        "--data", required=True, type=Path, help="folder of eyeglass images (AGN layout or 64x176)"
    )
    q.add_argument(
        "--out", type=Path, default=Path("runs/glasses-dcgan"), help="run folder (default: %(default)s)"
    )
    q.add_argument("--epochs", type=int, default=25)
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--learning-rate", type=float, default=2e-4)
    q.add_argument("--limit", type=int, help="train on a random subset of this many images")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--no-store", action="store_true", help="do not store the result in saved-models/")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=_cmd_train)

    q = verb("sample", "draw eyeglass frames from the generator into a grid image")
    q.add_argument(
        "--out", type=Path, default=Path("eyeglass-samples.png"), help="grid PNG (default: %(default)s)"
    )
    q.add_argument("-n", "--count", type=int, default=36, help="frames (default: 36)")
    q.add_argument("--seed", type=int, default=0, help="latent seed (default: 0)")
    q.add_argument("--columns", type=int, default=6)
    q.add_argument(
        "--generator", help="generator weights (.weights.h5) or saved-models name (default: shipped)"
    )
    q.add_argument("--canvases", type=Path, help="also write each frame as a 224x224 PNG into this folder")
    q.set_defaults(run=_cmd_sample)

    q = verb(
        "template",
        "write a printable marked frame (PNG + PDF) to wear for photos of a physical attack",
        "Write an A4 sheet with a plain grey frame carrying the 7 green marks, a cut line and a scale bar. "
        "Print it at 100%, cut it out, wear it and photograph yourself: those photos drive "
        "`advface glasses dodge|impersonate --physical`.",
    )
    q.add_argument("--out", type=Path, default=Path("marked-frames"), help="file stem (default: %(default)s)")
    q.add_argument("--width-mm", type=float, default=145.0, help="printed frame width (default: 145 mm)")
    q.add_argument("--dpi", type=int, default=300)
    q.set_defaults(run=_cmd_template)

    for goal in ("dodge", "impersonate"):
        what = (
            "make the model miss the person (dodging)"
            if goal == "dodge"
            else "make the model take the person for a target (impersonation)"
        )
        q = verb(
            goal,
            f"fine-tune the eyeglass generator to {what}",
            f"AGN attack: fine-tune the eyeglass generator so that frames it draws, worn on every photo, "
            f"{what}. Writes a run folder with config.json, steps.tsv, results.tsv, the best frame "
            "(glasses.png and a printable PDF), each photo with and without it, and objectives.png.",
        )
        q.add_argument("--images", required=True, nargs="+", type=Path, help="photos of the attacker")
        q.add_argument("--model", default="dlib-resnet", help="zoo model (default: dlib-resnet)")
        q.add_argument("--out", type=Path, help=f"run folder (default: runs/glasses-{goal})")
        if goal == "dodge":
            q.add_argument(
                "--references",
                nargs="+",
                type=Path,
                help="embedding models: enrolment photos of the attacker (default: --images)",
            )
            q.add_argument(
                "--true-class",
                help="classifiers: the attacker's class (name or index; default: "
                "the class the model gives the clean photos)",
            )
        else:
            q.add_argument("--target", nargs="+", type=Path, help="embedding models: photos of the target")
            q.add_argument("--target-class", help="classifiers: the class to impersonate (name or index)")
        q.add_argument("--threshold", type=float, help="verification threshold (default: the model's)")
        q.add_argument(
            "--probability",
            type=float,
            help="classifiers: also require p(own) <= P (dodge) or p(target) >= P (impersonate)",
        )
        q.add_argument(
            "--physical",
            action="store_true",
            help="photos show the attacker wearing printed marked frames (`glasses template`): "
            "place frames through the homography fitted to the 7 green marks",
        )
        q.add_argument("--steps", type=int, default=300, help="most attack steps (default: 300)")
        q.add_argument(
            "--learning-rate", type=float, default=5e-4, help="generator Adam rate (default: 5e-4)"
        )
        q.add_argument("--kappa", type=float, default=0.25, help="realism weight in [0, 1] (default: 0.25)")
        q.add_argument("--batch-size", type=int, default=16)
        q.add_argument("--check-every", type=int, default=5)
        q.add_argument("--check-samples", type=int, default=16)
        q.add_argument(
            "--success-fraction",
            type=float,
            default=1.0,
            help="share of photos one frame must fool (default: 1.0 = all)",
        )
        q.add_argument("--generator", help="pre-trained generator weights (default: shipped)")
        q.add_argument("--discriminator", help="pre-trained discriminator weights (default: shipped)")
        q.add_argument(
            "--real-glasses",
            type=Path,
            help="folder of real frames for the discriminator (default: 1,000 procedural frames)",
        )
        q.add_argument("--width-mm", type=float, default=145.0, help="printed frame width (default: 145 mm)")
        q.add_argument("--seed", type=int, default=0)
        cli._add_alignment_flags(q)
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(run=_cmd_attack, goal=goal)

    q = verb(
        "check",
        "live check: is the model fooled, frame by frame, on a webcam or a video?",
        "Read frames from a webcam (--camera INDEX) or a video file (--video FILE), align the face, and "
        "judge each frame against the goal; print a summary (fraction of frames fooled).",
    )
    source = q.add_mutually_exclusive_group(required=True)
    source.add_argument("--camera", type=int, help="webcam index (0: the default camera)")
    source.add_argument("--video", type=Path, help="video file (or a folder of frames)")
    q.add_argument("--model", default="dlib-resnet", help="zoo model (default: dlib-resnet)")
    q.add_argument("--goal", choices=["dodge", "impersonate"], default="dodge")
    q.add_argument("--references", nargs="+", type=Path, help="dodge: enrolment photos of the wearer")
    q.add_argument("--target", nargs="+", type=Path, help="impersonate: photos of the target")
    q.add_argument(
        "--class", dest="label", help="classifiers: own class (dodge) or target class (impersonate)"
    )
    q.add_argument("--threshold", type=float, help="verification threshold (default: the model's)")
    q.add_argument("--every", type=int, default=1, help="check every N-th frame (default: 1)")
    q.add_argument("--max-frames", type=int, help="stop after this many checked frames")
    q.add_argument(
        "--out",
        type=Path,
        help="run folder: config.json, frames.tsv (a row per frame, written as it is checked) and "
        "summary.json (also after Ctrl-C or an unplugged camera)",
    )
    cli._add_alignment_flags(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=_cmd_check)


# -- data, training, sampling --------------------------------------------------------------------------------
def _cmd_data(args) -> int:
    from advface import cli
    from advface.glasses.textures import write_eyeglasses

    if args.count < 1:
        raise AdvfaceError(f"-n must be at least 1. Received: -n {args.count}.")
    paths = write_eyeglasses(args.out, args.count, seed=args.seed, progress=cli._progress_bar("glasses data"))
    print(f"{len(paths)} eyeglass frames in {args.out} (AGN layout: 224x224, frame on black)")
    return 0


def _cmd_train(args) -> int:
    from advface import cli
    from advface.glasses.dcgan import train_dcgan

    command = (
        f"advface glasses train --data {args.data} --epochs {args.epochs} --batch-size {args.batch_size} "
        f"--learning-rate {args.learning_rate:g} --seed {args.seed}"
        + (f" --limit {args.limit}" if args.limit else "")
    )
    result = train_dcgan(
        args.data,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        limit=args.limit,
        seed=args.seed,
        store=not args.no_store,
        command=command,
        progress=cli._progress_bar("glasses train"),
    )
    last = result.history[-1] if result.history else {}
    payload = {
        "run_dir": str(result.run_dir),
        "epochs": result.epochs,
        "last": last,
        "generator": str(result.generator),
        "discriminator": str(result.discriminator),
        "samples": str(result.samples),
    }
    text = (
        f"trained the eyeglass DCGAN for {result.epochs} epochs -> {result.run_dir}\n"
        + (
            f"  last epoch: D loss {last['d_loss']:.3f}, G loss {last['g_loss']:.3f}, "
            f"D(real) {last['d_real']:.2f}, D(fake) {last['d_fake']:.2f}\n"
            if last
            else ""
        )
        + f"  samples: {result.samples}\n"
        + (f"  stored: {result.generator}, {result.discriminator}" if result.generator else "  not stored")
    )
    cli._emit(args, payload, text)
    return 0


def _cmd_sample(args) -> int:
    from advface.glasses.dcgan import generate, load_generator, sample_grid, sample_latents
    from advface.glasses.geometry import pad_canvas
    from advface.images import save_image

    if args.count < 1 or args.columns < 1:
        raise AdvfaceError(
            f"-n and --columns must be at least 1. Received: -n {args.count}, --columns {args.columns}."
        )
    canvases = generate(load_generator(args.generator), sample_latents(args.count, args.seed))
    path = save_image(args.out, sample_grid(canvases, columns=args.columns))
    if args.canvases:
        for i, canvas in enumerate(pad_canvas(canvases)):
            save_image(Path(args.canvases) / f"sample{i:04d}.png", canvas)
    print(f"{args.count} frames (seed {args.seed}) -> {path}")
    return 0


def _cmd_template(args) -> int:
    from advface.glasses.physical import printable_frames

    plain = np.full((64, 176, 3), 0.55, np.float32)
    png, pdf = printable_frames(plain, args.out, width_mm=args.width_mm, dpi=args.dpi, marks=True)
    print(f"printable marked frame: {pdf} (and {png}); print at 100%, frame width {args.width_mm:g} mm")
    return 0


# -- the attack ----------------------------------------------------------------------------------------------
def _cmd_attack(args) -> int:
    from advface import cli
    from advface.attacks.eyeglasses import EyeglassAttack
    from advface.glasses.workflow import describe, run_attack

    attack = EyeglassAttack(
        steps=args.steps,
        learning_rate=args.learning_rate,
        kappa=args.kappa,
        batch_size=args.batch_size,
        check_every=args.check_every,
        check_samples=args.check_samples,
        success_fraction=args.success_fraction,
        generator=args.generator,
        discriminator=args.discriminator,
        real_glasses=args.real_glasses,
    )
    dodge = args.goal == "dodge"
    run = run_attack(
        args.out or Path(f"runs/glasses-{args.goal}"),
        model=args.model,
        images=args.images,
        goal=args.goal,
        attack=attack,
        references=args.references if dodge else None,
        target=None if dodge else args.target,
        true_class=args.true_class if dodge else None,
        target_class=None if dodge else args.target_class,
        threshold=args.threshold,
        probability=args.probability,
        physical=args.physical,
        width_mm=args.width_mm,
        seed=args.seed,
        aligner=cli._aligner(args),
        arguments={k: v for k, v in vars(args).items() if k not in ("run", "json")},
        progress=cli._progress_bar(f"glasses {args.goal}"),
    )
    cli._emit(args, run.summary, describe(run))
    return 0 if run.summary["success"] else 1


# -- live check ----------------------------------------------------------------------------------------------
def _cmd_check(args) -> int:
    from advface import cli
    from advface.glasses.camera import iter_checks, record_checks
    from advface.glasses.workflow import make_goal
    from advface.zoo import load_model

    model, aligner = load_model(args.model), cli._aligner(args)
    # The check has no attack photos to fall back on: it needs the enrolled / target photos or the class.
    if model.kind == "embedding" and not (args.references if args.goal == "dodge" else args.target):
        flag = "--references" if args.goal == "dodge" else "--target"
        raise AdvfaceError(f"The {args.goal} check with {model.name} needs {flag} photos.")
    if model.kind != "embedding" and args.label is None:
        raise AdvfaceError(f"The check with classifier {model.name} needs --class.")
    goal, _ = make_goal(
        args.goal,
        model,
        None,
        aligner,
        references=args.references,
        target=args.target,
        true_class=args.label,
        target_class=args.label,
        threshold=args.threshold,
    )
    source = args.camera if args.camera is not None else args.video
    checks = iter_checks(
        source,
        model,
        goal,
        aligner=aligner,
        every=args.every,
        max_frames=args.max_frames,
        progress=cli._progress_bar("glasses check"),
    )
    # Each frame's row is written as it is decided: a killed or interrupted check keeps what it checked.
    arguments = {k: v for k, v in vars(args).items() if k not in ("run", "json")}
    result = record_checks(checks, args.out, command="glasses check", arguments=arguments)
    payload = {
        "source": str(source),
        "model": model.name,
        "goal": args.goal,
        "frames": result.frames,
        "frames_with_face": result.frames_with_face,
        "frames_fooled": result.frames_fooled,
        "fooled_fraction": result.fooled_fraction,
    }
    cli._emit(args, payload, result.text())
    return 0
