"""The ``advface`` command line. The only core module that renders progress (tqdm).

User errors print one line and exit with code 2; results go to stdout (``--json`` for machines).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from pathlib import Path

from advface.errors import AdvfaceError
from advface.version import __version__

EXAMPLES = {
    "align": """examples:
  advface align data/samples/obama.jpg data/samples/biden.jpg --out runs/chips
  advface align data/samples/*.jpg --out runs/arcface --template arcface --json""",
    "verify": """examples:
  advface verify data/samples/obama.jpg data/samples/obama2.jpg
  advface verify data/samples/obama.jpg data/samples/biden.jpg --json""",
    "identify": """examples:
  advface identify data/samples/obama3.jpg --gallery data/samples
  advface identify probe.jpg --gallery people/ --k 3 --json   # people/<name>/*.jpg""",
    "zoo": """examples:
  advface zoo list
  advface zoo convert arcface-r50 ~/Downloads/ms1mv3_arcface_r50_fp16/backbone.pth
  advface zoo convert stylegan-ffhq karras2019stylegan-ffhq-1024x1024.pkl""",
    "zoo convert": """examples:
  advface zoo convert arcface-r50 ~/Downloads/ms1mv3_arcface_r50_fp16/backbone.pth
  advface zoo convert openface10 of10.h5 --labels class-mapping_10.txt   # agns-port Keras 2 file
  advface zoo convert stylegan-ffhq karras2019stylegan-ffhq-1024x1024.pkl   # NVIDIA's pickle, md5 checked
  advface zoo convert stylegan-ffhq stylegan_ffhq.pth                       # or InterFaceGAN's""",
    "train classifier": """examples:
  advface train classifier --data people/ --name my-people            # people/<name>/*.jpg
  advface train classifier --data pubfig_aligned/ --name pubfig10 --aligned --epochs 50
  advface train classifier --data people/ --name ft --backbone arcface-r50 --fine-tune""",
    "train siamese": """examples:
  advface train siamese --data people/ --name my-siamese
  advface train siamese --data people/ --name s2 --margin 0.8 --projection 64 --epochs 40""",
    "demo": """examples:
  advface demo --out runs/demo
  advface demo --out runs/mine --samples my_faces/""",
}


def _progress_bar(desc: str):
    """A progress callback drawing a tqdm bar on stderr (closes itself on the last step)."""
    from tqdm import tqdm

    bars: dict = {}

    def callback(p) -> None:
        bar = bars.get(p.stage)
        if bar is None:
            bar = bars[p.stage] = tqdm(
                total=p.total, desc=f"{desc} {p.stage}".strip(), leave=False, file=sys.stderr
            )
        bar.n = p.step
        if p.metrics:
            bar.set_postfix(
                {k: v for k, v in p.metrics.items() if isinstance(v, int | float | str)}, refresh=False
            )
        bar.refresh()
        if p.total is not None and p.step >= p.total:
            bar.close()

    return callback


def _emit(args, payload, text: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else text)


def _aligner(args):
    from advface.alignment import FaceAligner

    return FaceAligner(detector=args.detector, landmarks=args.landmarks, upsample=args.upsample)


def _cmd_align(args) -> int:
    from advface.images import load_image, save_image

    aligner, out = _aligner(args), Path(args.out)
    records, lines = [], []
    for path in args.images:
        faces = aligner.align(load_image(path), args.template)
        entry = {"image": str(path), "faces": []}
        for i, aligned in enumerate(faces):
            chip_path = save_image(out / f"{Path(path).stem}_{i}.png", aligned.chip)
            entry["faces"].append(
                {
                    "box": aligned.face.box,
                    "score": aligned.face.score,
                    "landmarks": aligned.face.landmarks.tolist(),
                    "chip": str(chip_path),
                }
            )
        records.append(entry)
        lines.append(f"{path}: {len(faces)} face(s)" + ("" if faces else " (no face found)"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "faces.json").write_text(json.dumps(records, indent=2) + "\n")
    _emit(args, records, "\n".join(lines) + f"\nchips and faces.json in {out}")
    return 0


def _chips(model, aligner, paths):
    """The largest face of each photo, as a chip for ``model`` (a photo without a face is an error)."""
    import numpy as np

    from advface.images import load_image

    return np.stack([aligner.align_one(load_image(p), model.template, source=str(p)).chip for p in paths])


def _cmd_verify(args) -> int:
    from advface.verification import Verifier
    from advface.zoo import load_model

    model = load_model(args.model)
    chips = _chips(model, _aligner(args), [args.a, args.b])
    v = Verifier(model, threshold=args.threshold).verify(chips[:1], chips[1:])[0]
    payload = {
        "a": str(args.a),
        "b": str(args.b),
        "model": model.name,
        "distance": v.distance,
        "threshold": v.threshold,
        "metric": v.metric,
        "same": v.same,
    }
    verdict = "same person" if v.same else "different people"
    sign = "<=" if v.same else ">"
    _emit(
        args,
        payload,
        f"{verdict}: {v.metric} distance {v.distance:.4f} {sign} threshold {v.threshold:g} ({model.name})",
    )
    return 0


def _cmd_identify(args) -> int:
    import numpy as np

    from advface.images import load_image
    from advface.verification import Gallery, gallery_files
    from advface.zoo import load_model

    model, aligner = load_model(args.model), _aligner(args)
    if model.kind != "embedding":
        raise AdvfaceError(
            f"identify searches a gallery of embeddings, and {model.name} is a {model.kind}. Received: "
            f"model={args.model!r}. Use an embedding model (advface zoo list)."
        )
    probe = Path(args.probe).resolve()
    entries = [(f, label) for f, label in gallery_files(args.gallery) if f.resolve() != probe]
    chips, labels, skipped = [], [], []
    for f, label in entries:
        faces = aligner.align(load_image(f), model.template)
        if faces:
            chips.append(faces[0].chip)
            labels.append(label)
        else:
            skipped.append(str(f))
    if not chips:
        raise AdvfaceError(f"No face found in any image of the gallery {args.gallery}.")
    threshold = model.threshold if args.threshold is None else args.threshold
    gallery = Gallery(model.embed(np.stack(chips)), labels, metric=model.spec.distance, threshold=threshold)
    result = gallery.search(model.embed(_chips(model, aligner, [args.probe])), k=args.k)[0]
    payload = {
        "probe": str(args.probe),
        "model": model.name,
        "threshold": threshold,
        "label": result.label,
        "accepted": result.accepted,
        "matches": [{"label": m.label, "distance": m.distance} for m in result.matches],
        "gallery_images": len(labels),
        "skipped_no_face": skipped,
    }
    head = f"identified as {result.label}" if result.accepted else "unknown: no identity within the threshold"
    rows = [f"  {i}. {m.label}  {m.distance:.4f}" for i, m in enumerate(result.matches, 1)]
    _emit(args, payload, "\n".join([f"{head} ({model.name}, threshold {threshold:g})", *rows]))
    return 0


def _cmd_zoo_list(args) -> int:
    from advface.zoo import list_generators, list_models

    rows = list_models()
    generators = list_generators()
    lines = []
    for r in rows:
        state = (
            "available" if r["available"] else "not converted yet" if r["convert_from"] else "NOT available"
        )
        lines.append(f"{r['name']}  [{r['kind']}, {state}]")
        lines.append(f"  {r['description']}")
        if r["kind"] == "classifier":
            labels = f"{len(r['labels'])} labels" if r["labels"] else "no labels given"
            lines.append(f"  input {r['template']}; logits ({labels})")
        else:
            lines.append(f"  input {r['template']}; {r['distance']} distance, threshold {r['threshold']}")
        lines.append(f"  weights: {r['weights']}")
        lines.append(f"  licence: {r['licence']}")
    lines.append("")
    lines.append("generators (advface.generators.load_generator):")
    for r in generators:
        state = (
            "available" if r["available"] else "not converted yet" if r["convert_from"] else "NOT available"
        )
        lines.append(f"{r['name']}  [generator, {state}]")
        lines.append(f"  {r['description']}")
        lines.append(
            f"  {r['latent_space']} in R^{r['latent_size']} -> {r['resolution']}x{r['resolution']} RGB"
        )
        lines.append(f"  trained on: {r['trained_on']}")
        lines.append(f"  weights: {r['weights']}")
        lines.append(f"  licence: {r['licence']}")
    _emit(args, rows + generators, "\n".join(lines))
    return 0


def _read_labels(path: Path | None) -> list[str] | None:
    """Class names from a file: one per line, or the agns-port class mapping (``name : index`` lines)."""
    if path is None:
        return None
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise AdvfaceError(f"Cannot read the labels file. Received: labels={str(path)!r} ({exc}).") from None
    mapping = [
        line.rsplit(":", 1) for line in lines if ":" in line and line.rsplit(":", 1)[1].strip().isdigit()
    ]
    if mapping:
        return [name.strip() for name, _ in sorted(mapping, key=lambda m: int(m[1]))]
    return [line for line in lines if line and not line.startswith("#")]


def _cmd_zoo_convert(args) -> int:
    from advface.zoo import convert_model

    result = convert_model(args.name, args.file, labels=_read_labels(args.labels), overwrite=args.overwrite)
    payload = {
        "name": result.name,
        "weights": str(result.path),
        "sha256": result.sha256,
        "source": str(result.source),
        "source_sha256": result.source_sha256,
        "parameters": result.parameters,
        "reload_max_diff": result.reload_max_diff,
    }
    use = (
        f"advface.generators.load_generator({result.name!r})"
        if result.kind == "generator"
        else f"advface verify a.jpg b.jpg --model {result.name}"
    )
    text = (
        f"converted {result.source.name} -> {result.path}\n"
        f"  {result.parameters:,} parameters; sha256 {result.sha256} (recorded in MODELS.md)\n"
        f"  reload check: max |difference| {result.reload_max_diff:.2e}\n"
        f"  use it: {use}"
    )
    _emit(args, payload, text)
    return 0


def _cmd_train(args) -> int:
    from advface import training

    common = dict(
        name=args.name,
        run_dir=args.out or Path("runs") / f"train-{args.name}",
        backbone=args.backbone,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        augment=not args.no_augment,
        fine_tune=args.fine_tune,
        aligned=args.aligned,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=_progress_bar(f"train {args.train_command}"),
    )
    if args.train_command == "classifier":
        result = training.train_classifier(
            args.data,
            validation_fraction=args.validation_fraction,
            split=args.split,
            hidden=args.hidden,
            **common,
        )
    else:
        result = training.train_siamese(args.data, margin=args.margin, projection=args.projection, **common)
    payload = {
        "name": result.name,
        "weights": str(result.weights),
        "run_dir": str(result.run_dir),
        "sizes": result.sizes,
        "metrics": result.metrics,
        "labels": list(result.labels),
        "skipped": [[str(p), r] for p, r in result.skipped],
    }
    lines = [
        f"trained {result.name} ({args.train_command}, {result.epochs} epochs) -> {result.weights}",
        "  " + ", ".join(f"{k} {v}" for k, v in result.sizes.items()),
        "  "
        + ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.metrics.items()
        ),
    ]
    summary = training.confusion_summary(result)
    if summary:
        lines += ["validation confusion:", summary]
    if result.skipped:
        lines.append(
            f"  {len(result.skipped)} photos without a usable face: see {result.run_dir / 'skipped.tsv'}"
        )
    lines.append(f"run folder: {result.run_dir}; load it with advface.zoo.load_model({result.name!r})")
    _emit(args, payload, "\n".join(lines))
    return 0


def _cmd_demo(args) -> int:
    from advface.demo import run_demo

    report_path = run_demo(args.out, samples=args.samples, progress=_progress_bar("demo"))
    print(report_path.read_text())
    print(f"\nRun folder: {report_path.parent} (open report.md)")
    return 0


def _add_alignment_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detector", choices=["hog", "cnn"], default="hog", help="dlib face detector (default: hog)"
    )
    p.add_argument("--landmarks", type=int, choices=[5, 68], default=5, help="landmark model (default: 5)")
    p.add_argument("--upsample", type=int, default=1, help="image doublings before detection (default: 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advface",
        description="Assess how face recognition fails under attack.",
        epilog="examples:\n  advface demo --out runs/demo\n  advface verify a.jpg b.jpg\n  advface zoo list\n"
        "  advface train classifier --data people/ --name my-people\n"
        "  advface glasses dodge --images me1.jpg me2.jpg --model dlib-resnet\n"
        "  advface attack pgd --images data/samples/obama.jpg --epsilon 4/255",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"advface {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = command("align", "Detect faces and write aligned chips")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--out", required=True, type=Path, help="folder for the chips and faces.json")
    p.add_argument(
        "--template",
        default="dlib",
        help="chip template: dlib, vgg, openface, arcface, facenet (default: dlib)",
    )
    _add_alignment_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_cmd_align)

    p = command("verify", "1:1 verification: are two photos the same person?")
    p.add_argument("a", type=Path, help="first photo")
    p.add_argument("b", type=Path, help="second photo")
    p.add_argument("--model", default="dlib-resnet", help="zoo model (default: dlib-resnet)")
    p.add_argument("--threshold", type=float, help="override the model's threshold")
    _add_alignment_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_cmd_verify)

    p = command("identify", "1:N identification of a photo against a gallery folder")
    p.add_argument("probe", type=Path, help="the photo to identify")
    p.add_argument(
        "--gallery",
        required=True,
        type=Path,
        help="folder with one sub-folder per person, or flat files named person[N].jpg",
    )
    p.add_argument("--model", default="dlib-resnet", help="zoo model (default: dlib-resnet)")
    p.add_argument("--k", type=int, default=5, help="identities to list (default: 5)")
    p.add_argument("--threshold", type=float, help="open-set rejection threshold (default: the model's)")
    _add_alignment_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_cmd_identify)

    p = command("zoo", "The model zoo")
    zoo = p.add_subparsers(dest="zoo_command", required=True, metavar="VERB")
    q = zoo.add_parser(
        "list",
        help="list the models and generators, their inputs, thresholds, weights and licences",
        epilog=EXAMPLES["zoo"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=_cmd_zoo_list)
    q = zoo.add_parser(
        "convert",
        help="convert weights you downloaded (PyTorch .pth/.pt, agns-port Keras 2 .h5, NVIDIA StyleGAN .pkl) "
        "into saved-models/",
        description="Convert a foreign weights file, read safely (no code in it runs), into "
        "saved-models/NAME.weights.h5 and record its sha256 in saved-models/MODELS.md.",
        epilog=EXAMPLES["zoo convert"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "name",
        help="zoo name or generator (see `advface zoo list`), e.g. arcface-r50, facenet-vggface2, vgg10, "
        "stylegan-ffhq",
    )
    q.add_argument("file", type=Path, help="the weights file you have")
    q.add_argument("--labels", type=Path, help="classifiers: class names, one per line (or name : index)")
    q.add_argument("--overwrite", action="store_true", help="replace existing converted weights")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=_cmd_zoo_convert)

    p = command("train", "Train a classifier or a siamese net on a folder of faces")
    train = p.add_subparsers(dest="train_command", required=True, metavar="KIND")
    for kind, help_ in (
        ("classifier", "an identity classifier (default: frozen dlib-resnet + a small head)"),
        ("siamese", "a siamese verification net (shared tower, cosine similarity, contrastive loss)"),
    ):
        q = train.add_parser(
            kind,
            help=help_,
            description=f"Train {help_} on DIR/<identity>/*.jpg and register it in the zoo as NAME.",
            epilog=EXAMPLES[f"train {kind}"],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        q.add_argument("--data", required=True, type=Path, help="folder with one sub-folder per identity")
        q.add_argument("--name", required=True, help="zoo name for the trained model")
        q.add_argument("--out", type=Path, help="run folder; re-run to resume (default: runs/train-NAME)")
        q.add_argument("--backbone", default="dlib-resnet", help="zoo embedding model (default: dlib-resnet)")
        q.add_argument("--epochs", type=int, default=30 if kind == "classifier" else 20)
        q.add_argument("--batch-size", type=int, default=32)
        q.add_argument("--learning-rate", type=float, default=1e-3)
        q.add_argument("--no-augment", action="store_true", help="no flip/rotate/shift/zoom/light jitter")
        q.add_argument("--fine-tune", action="store_true", help="train the backbone too")
        q.add_argument("--aligned", action="store_true", help="photos are already aligned face chips")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--overwrite", action="store_true", help="replace a model of that name")
        q.add_argument("--json", action="store_true", help="print JSON")
        if kind == "classifier":
            q.add_argument(
                "--validation-fraction",
                type=float,
                default=0.2,
                help="share of each identity's photos held out (default: 0.2)",
            )
            q.add_argument(
                "--split",
                default="image",
                choices=["image", "identity"],
                help="image-level split (identity-disjoint is for siamese nets)",
            )
            q.add_argument("--hidden", type=int, default=128, help="hidden units of the head (0: linear)")
        else:
            q.add_argument("--margin", type=float, default=0.5, help="contrastive margin (cosine distance)")
            q.add_argument("--projection", type=int, default=128, help="embedding size of the tower")
        q.set_defaults(run=_cmd_train)

    from advface.glasses.commands import add_parser as add_glasses

    add_glasses(command)

    from advface.attacks.commands import add_parser as add_attack

    add_attack(command)

    from advface.semantic.commands import add_parser as add_semantic

    add_semantic(command)

    p = command("demo", "Run the offline demo of every workflow into one run folder")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    p.add_argument("--samples", type=Path, help="folder of sample faces (default: data/samples)")
    p.set_defaults(run=_cmd_demo)

    # Commands other distributions or packages add (the desktop launcher's `advface gui`), registered
    # under the entry-point group "advface.commands" so the core never imports them.
    for entry in importlib.metadata.entry_points(group="advface.commands"):
        entry.load()(command)
    return parser


# The arguments of the command being run (commands that re-launch themselves as workers read them). Kept
# out of the parsed namespace, which run folders record as the run's arguments.
_INVOCATION: list[str] = []


def invocation() -> list[str]:
    """The arguments ``advface`` was called with (without the program name)."""
    return list(_INVOCATION)


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter (no GPU found, oneDNN notes) is not for users of a CLI.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    _INVOCATION[:] = list(sys.argv[1:] if argv is None else argv)  # for commands that re-launch themselves
    try:
        return args.run(args)
    except AdvfaceError as exc:
        print(f"advface: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("advface: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
