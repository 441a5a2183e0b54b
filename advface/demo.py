"""The offline demo ``make demo`` runs: every workflow's example on embedded defaults, in one run folder.

Sections so far:

1. ``recognition/``: the real sample photos aligned with dlib, embedded with ``dlib-resnet``, every
   pair verified at the model's threshold, and leave-one-out 1:N identification.
2. ``training/``: a 3-identity classifier (frozen ``dlib-resnet`` + a small head) trained on the sample
   photos and augmented copies, registered in the run folder's own ``saved-models/`` and loaded back
   through the zoo.
3. ``glasses/``: the shipped eyeglass generator's sample grid; the AGN attack dodging ``dlib-resnet`` with
   Obama's three photos and impersonating Biden; the frames put back on the full photos through their
   landmarks and checked frame by frame as a video (the camera check); a printable marked frame.
4. ``attacks/``: the pixel-attack suite on ``dlib-resnet``: PGD dodging every sample face at 4/255, PGD
   making Obama pass for Biden at 8/255, every attack side by side on four faces, and PGD's success rate
   against epsilon.

Each later workflow adds its section here and a paragraph to ``report.md``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError
from advface.progress import ProgressCallback, report
from advface.runs import ResultsTable, write_config

# Who is in the sample photos (data/README.md): obama_partial_face* are crops of obama.jpg, 32bit.png is an
# RGBA copy of obama2.jpg; astronaut.png is Eileen Collins.
SAMPLE_IDENTITIES = {
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "obama3.jpg": "obama",
    "obama_partial_face.jpg": "obama",
    "obama_partial_face2.jpg": "obama",
    "32bit.png": "obama",
    "biden.jpg": "biden",
    "astronaut.png": "eileen_collins",
}


def default_samples() -> Path:
    """``data/samples`` of the source checkout (made by ``make samples``)."""
    return Path(__file__).resolve().parent.parent / "data" / "samples"


def _span(values) -> str:
    return f"{min(values):.3f}..{max(values):.3f}" if values else "none"


def _recognition(samples: Path, out: Path, progress: ProgressCallback | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advface.alignment import FaceAligner
    from advface.images import load_image, save_image
    from advface.verification import Gallery, label_from_filename, pairwise_distances
    from advface.zoo import load_model

    files = [samples / name for name in SAMPLE_IDENTITIES if (samples / name).exists()]
    if not files:
        raise AdvfaceError(f"No sample faces in {samples}. Run `make samples` first.")
    model = load_model("dlib-resnet")
    aligner = FaceAligner()
    (out / "chips").mkdir(parents=True, exist_ok=True)

    # 1. Align: the largest face of each photo, as a dlib chip.
    names, chips, lines = [], [], []
    for i, path in enumerate(files, 1):
        faces = aligner.align(load_image(path), model.template)
        report(progress, i, len(files), "align", faces=len(faces))
        if not faces:
            lines.append(f"- {path.name}: no face found")
            continue
        names.append(path.name)
        chips.append(faces[0].chip)
        save_image(out / "chips" / f"{path.stem}.png", faces[0].chip)
        box = ", ".join(f"{v:.0f}" for v in faces[0].face.box)
        score = faces[0].face.score
        lines.append(f"- {path.name}: {len(faces)} face(s); largest at ({box}), score {score:.2f}")

    # 2. Embed and compare every pair.
    embeddings = model.embed(np.stack(chips))
    t0 = time.perf_counter()  # timed on a second, warm call: the first one traces the graph
    model.embed(np.stack(chips))
    embed_ms = 1000 * (time.perf_counter() - t0) / len(chips)
    d = pairwise_distances(embeddings, embeddings, model.spec.distance)
    labels = [SAMPLE_IDENTITIES.get(n, label_from_filename(n)) for n in names]
    table = ResultsTable(
        out / "results.tsv", ["pair", "a", "b", "distance", "same_predicted", "same_truth", "correct"]
    )
    correct = total = 0
    for i, j in itertools.combinations(range(len(names)), 2):
        same_pred, same_truth = bool(d[i, j] <= model.threshold), labels[i] == labels[j]
        correct, total = correct + (same_pred == same_truth), total + 1
        key = f"{names[i]}|{names[j]}"
        if key not in table.done:
            table.add(
                {
                    "pair": key,
                    "a": names[i],
                    "b": names[j],
                    "distance": float(d[i, j]),
                    "same_predicted": same_pred,
                    "same_truth": same_truth,
                    "correct": same_pred == same_truth,
                }
            )
    genuine = [d[i, j] for i, j in itertools.combinations(range(len(names)), 2) if labels[i] == labels[j]]
    impostor = [d[i, j] for i, j in itertools.combinations(range(len(names)), 2) if labels[i] != labels[j]]

    # 3. Leave-one-out identification: each photo against all the others.
    ident_lines = []
    for i, name in enumerate(names):
        rest = [j for j in range(len(names)) if j != i]
        gallery = Gallery(
            embeddings[rest], [labels[j] for j in rest], metric=model.spec.distance, threshold=model.threshold
        )
        result = gallery.search(embeddings[i : i + 1], k=2)[0]
        best = result.matches[0]
        verdict = result.label or "unknown (rejected)"
        ident_lines.append(f"| {name} | {labels[i]} | {verdict} | {best.label} {best.distance:.3f} |")

    # 4. A distance matrix figure.
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(d, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i, j in itertools.product(range(len(names)), repeat=2):
        ax.text(
            j,
            i,
            f"{d[i, j]:.2f}",
            ha="center",
            va="center",
            fontsize=6,
            color="white" if d[i, j] < model.threshold else "black",
        )
    fig.colorbar(im, ax=ax, label=f"{model.spec.distance} distance (threshold {model.threshold})")
    ax.set_title(f"{model.name}: distances between the sample faces")
    fig.tight_layout()
    fig.savefig(out / "distances.png", dpi=120)
    plt.close(fig)

    return [
        "## Face recognition (dlib alignment, dlib-resnet)",
        "",
        f"{len(files)} sample photos, {len(names)} with a face. Chips in `recognition/chips/`; every pair in "
        "`recognition/results.tsv`.",
        "",
        *lines,
        "",
        f"Verification at threshold {model.threshold}: {correct}/{total} pairs decided correctly. "
        f"Same person: distances {_span(genuine)}; different people: {_span(impostor)}. "
        f"Embedding: {embed_ms:.1f} ms per face on this machine.",
        "",
        "![distances](recognition/distances.png)",
        "",
        "Leave-one-out identification (each photo against all others, open-set threshold "
        f"{model.threshold}):",
        "",
        "| probe | truth | identified as | nearest |",
        "|---|---|---|---|",
        *ident_lines,
        "",
    ]


@contextlib.contextmanager
def _models_in(folder: Path):
    """Register models in ``folder`` instead of the checkout's saved-models/ while the block runs."""
    old = os.environ.get("ADVFACE_MODELS")
    os.environ["ADVFACE_MODELS"] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("ADVFACE_MODELS", None)
        else:
            os.environ["ADVFACE_MODELS"] = old


def sample_people(samples: Path, folder: Path) -> Path:
    """``folder/<identity>/*.jpg``: the distinct sample photos of each person plus augmented copies
    (mirrored, brighter, lower contrast, rotated) so that every identity has several photos."""
    from PIL import Image, ImageEnhance, ImageOps

    sources = {
        "obama": ["obama.jpg", "obama2.jpg", "obama3.jpg"],
        "biden": ["biden.jpg"],
        "eileen_collins": ["astronaut.png"],
    }
    for person, files in sources.items():
        (folder / person).mkdir(parents=True, exist_ok=True)
        k = 0
        for name in files:
            if not (samples / name).exists():
                continue
            image = Image.open(samples / name).convert("RGB")
            image.thumbnail((900, 900))
            variants = [
                image,
                ImageOps.mirror(image),
                ImageEnhance.Brightness(image).enhance(1.25),
                ImageEnhance.Contrast(image).enhance(0.8),
                image.rotate(6, resample=Image.BICUBIC),
            ]
            for variant in variants[: 5 if len(files) == 1 else 2]:
                variant.save(folder / person / f"{k:02d}.jpg", quality=92)
                k += 1
    return folder


def _training(samples: Path, out: Path, progress: ProgressCallback | None) -> list[str]:
    from advface.training import confusion_summary, train_classifier
    from advface.zoo import load_model

    people = sample_people(samples, out / "people")
    t0 = time.perf_counter()
    with _models_in(out / "saved-models"):
        result = train_classifier(
            people,
            name="demo-people",
            run_dir=out / "run",
            epochs=15,
            batch_size=8,
            learning_rate=1e-2,
            seed=0,
            overwrite=True,
            progress=progress,
        )
        model = load_model("demo-people")
        kind, labels = model.kind, model.labels
    took = time.perf_counter() - t0
    metrics = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in result.metrics.items())
    return [
        "## Training a classifier on a folder of faces (`advface train classifier`)",
        "",
        f"`training/people/` holds {len(result.labels)} identities ({', '.join(result.labels)}): the "
        "distinct sample photos plus mirrored / brighter / lower-contrast / rotated copies. A classifier "
        "with the frozen `dlib-resnet` embedding and a small head trained for "
        f"{result.epochs} epochs with augmentation in {took:.0f} s: {result.sizes['train']} training and "
        f"{result.sizes['validation']} validation photos; {metrics}.",
        "",
        "Validation confusion (held-out photos; with this few people they include augmented copies of "
        "training photos, so this shows the workflow, not a benchmark):",
        "",
        "```",
        confusion_summary(result),
        "```",
        "",
        f"It was registered in `training/saved-models/` (weights, `demo-people.json`, a `MODELS.md` row with "
        f"its sha256) and loaded back through the zoo as a {kind} over {list(labels)}. Try it: "
        f"`ADVFACE_MODELS={out / 'saved-models'} advface zoo list`. The run folder "
        "`training/run/` has the config, `history.csv`, `confusion.tsv` and a resumable backup.",
        "",
    ]


def _glasses(samples: Path, out: Path, progress: ProgressCallback | None) -> list[str]:
    import cv2

    from advface.alignment import FaceAligner
    from advface.attacks.base import Dodge
    from advface.attacks.eyeglasses import EyeglassAttack
    from advface.glasses.camera import check_stream
    from advface.glasses.dcgan import generate, load_generator, sample_grid, sample_latents
    from advface.glasses.physical import printable_frames
    from advface.glasses.workflow import face_chips, run_attack, wear_on_photo
    from advface.images import load_image, save_image, to_uint8
    from advface.zoo import load_model

    attacker = [samples / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    if not all(p.exists() for p in attacker + [samples / "biden.jpg"]):
        raise AdvfaceError(
            f"The eyeglass demo needs obama*.jpg and biden.jpg in {samples}. Run `make samples`."
        )
    out.mkdir(parents=True, exist_ok=True)
    save_image(out / "generator-samples.png", sample_grid(generate(load_generator(), sample_latents(36, 0))))
    model, aligner = load_model("dlib-resnet"), FaceAligner()

    # 1. Dodging: one frame that keeps every photo of Obama beyond the threshold from his own photos.
    dodge = run_attack(
        out / "dodge",
        model=model,
        images=attacker,
        goal="dodge",
        attack=EyeglassAttack(steps=400),
        seed=0,
        aligner=aligner,
        progress=progress,
    )
    # 2. Impersonation of Biden, a harder goal, on a fixed budget; reported as measured.
    imp = run_attack(
        out / "impersonate",
        model=model,
        images=attacker,
        goal="impersonate",
        target=[samples / "biden.jpg"],
        attack=EyeglassAttack(steps=150),
        seed=0,
        aligner=aligner,
        progress=progress,
    )
    # 3. The dodging frame on the full photos (mapped through each face's landmarks), as a video that the
    #    camera check re-detects, re-aligns and judges frame by frame, like a webcam would.
    glasses = load_image(out / "dodge" / "glasses.png")
    frames = []
    for path in attacker:
        image = load_image(path)
        frames += [image, wear_on_photo(image, glasses, aligner=aligner)]
    h, w = 480, 640
    video = out / "check" / "wearing.avi"
    video.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (w, h))
    for i, frame in enumerate(frames):
        scale = min(w / frame.shape[1], h / frame.shape[0])
        small = cv2.resize(to_uint8(frame), (int(frame.shape[1] * scale), int(frame.shape[0] * scale)))
        canvas = np.zeros((h, w, 3), np.uint8)
        canvas[: small.shape[0], : small.shape[1]] = small
        save_image(out / "check" / f"frame{i}.png", canvas.astype(np.float32) / 255)
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()
    refs = Dodge(model.embed(face_chips(attacker, model, aligner)))
    checked = check_stream(video, model, refs, aligner=aligner)
    plain = [f for f in checked.frames if f.index % 2 == 0]
    worn = [f for f in checked.frames if f.index % 2 == 1]
    printable_frames(
        np.full((64, 176, 3), 0.55, np.float32), out / "marked-frames", width_mm=145.0, marks=True
    )

    def rows(run):
        s = run.summary
        return [
            f"| {Path(r['photo']).name} | {r['distance_before']:.3f} | {r['distance_after']:.3f} | "
            f"{'yes' if r['fooled'] else 'no'} |"
            for r in s["photos"]
        ]

    d, m = dodge.summary, imp.summary
    return [
        "## Adversarial eyeglasses (`advface glasses`)",
        "",
        "`glasses/generator-samples.png`: 36 frames from the eyeglass DCGAN shipped in `saved-models/` "
        "(trained here on procedural frames; `advface glasses sample` draws them).",
        "",
        f"**Dodging** `dlib-resnet` with Obama's three photos (`glasses/dodge/`): "
        f"{'success' if d['success'] else 'not reached'} after {d['steps']} steps in {d['seconds']:.0f} s. "
        f"Distance to his nearest own photo without and with the frame (threshold {d['threshold']:g}):",
        "",
        "| photo | before | after | fooled |",
        "|---|---|---|---|",
        *rows(dodge),
        "",
        f"**Impersonating Biden** (`glasses/impersonate/`, {m['steps']} steps, {m['seconds']:.0f} s): "
        f"{'success' if m['success'] else 'not reached'}; distance to Biden's photo:",
        "",
        "| photo | before | after | fooled |",
        "|---|---|---|---|",
        *rows(imp),
        "",
        f"**Camera check** (`glasses/check/wearing.avi`): the dodging frame put on the full photos through "
        f"their landmarks, re-detected and re-aligned frame by frame: fooled on "
        f"{sum(f.fooled for f in worn)} of {len(worn)} frames with the glasses and "
        f"{sum(f.fooled for f in plain)} of {len(plain)} without ({checked.summary()}).",
        "",
        "`glasses/marked-frames.pdf`: a frame with the 7 green marks to print at 100%, wear and photograph "
        "for the physical attack (`advface glasses dodge --physical`). Each attack folder has the frame "
        "(`glasses.png`), a printable PDF, every photo with and without it, `steps.tsv` and "
        "`objectives.png`.",
        "",
    ]


SUITE = [  # (name, settings, what the budget means) for the side-by-side table
    ("fgsm", {"epsilon": 4 / 255}, "Linf 4/255"),
    ("bim", {"epsilon": 4 / 255, "steps": 10}, "Linf 4/255"),
    ("pgd", {"epsilon": 4 / 255, "steps": 20}, "Linf 4/255"),
    ("mifgsm", {"epsilon": 4 / 255, "steps": 10, "diversity_prob": 0.5, "ti_kernel": 7}, "Linf 4/255"),
    ("apgd", {"epsilon": 4 / 255, "steps": 20}, "Linf 4/255"),
    ("square", {"epsilon": 4 / 255, "queries": 300}, "Linf 4/255, 300 queries"),
    ("cw", {"steps": 50, "binary_search_steps": 4}, "minimal L2"),
    ("deepfool", {"steps": 50}, "minimal L2"),
]


def _attacks(samples: Path, out: Path, progress: ProgressCallback | None) -> list[str]:
    from advface.alignment import FaceAligner
    from advface.attacks import make_attack
    from advface.attacks.workflow import GoalSpec, run_pixel_attack, run_sweep
    from advface.zoo import load_model

    model, aligner = load_model("dlib-resnet"), FaceAligner()
    photos = sorted(p for p in samples.iterdir() if p.name in SAMPLE_IDENTITIES)
    four = [samples / n for n in ("obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.png")]
    obamas = [samples / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    common = dict(model=model, aligner=aligner, seed=0, progress=progress)

    # 1. PGD at 4/255 against every sample face, each against its own clean embedding.
    dodge = run_pixel_attack(
        out / "pgd-dodge", attack=make_attack("pgd", epsilon=4 / 255), images=photos, **common
    ).summary
    # 2. Obama taken for Biden at 8/255.
    imp = run_pixel_attack(
        out / "pgd-impersonate",
        attack=make_attack("pgd", epsilon=8 / 255),
        images=obamas,
        goal=GoalSpec(goal="impersonate", targets=(str(samples / "biden.jpg"),)),
        **common,
    ).summary
    # 3. Every attack on the same four faces.
    rows = []
    for name, settings, budget in SUITE:
        s = run_pixel_attack(
            out / "suite" / name, attack=make_attack(name, **settings), images=four, **common
        ).summary
        rows.append((name, budget, s))
    # 4. PGD's success rate against epsilon.
    sweep = run_sweep(
        out / "pgd-sweep",
        make_attack=lambda eps: make_attack("pgd", epsilon=eps, steps=20),
        epsilons=[e / 255 for e in (0.25, 0.5, 1, 2, 4)],
        images=photos,
        **common,
    ).summary

    def median(value, scale=1.0):
        return "-" if value is None else f"{value * scale:.3g}"

    table = [
        "| attack | budget | success | after 8-bit | median Linf of successes (x 1/255) | median L2 | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, budget, s in rows:
        table.append(
            f"| {name} | {budget} | {s['success_rate']:.0%} | {s['success_rate_8bit']:.0%} | "
            f"{median(s['median_linf_successful'], 255)} | {median(s['median_l2_successful'])} | "
            f"{s['seconds']:.0f} |"
        )
    curve = ", ".join(
        f"{e * 255:g}/255: {r:.0%}" for e, r in zip(sweep["epsilons"], sweep["success_rates"], strict=True)
    )
    return [
        "## Pixel attacks (`advface attack`)",
        "",
        f"**PGD dodging at 4/255** (`attacks/pgd-dodge/`): {dodge['success_rate']:.0%} of "
        f"{dodge['attacked']} sample faces end farther than {dodge['threshold']:g} from their own clean "
        f"embedding (mean distance {dodge['mean_score']:.3f}; {dodge['success_rate_8bit']:.0%} still "
        "after rounding to 8 bits).",
        "",
        f"**PGD impersonating Biden at 8/255** (`attacks/pgd-impersonate/`): {imp['success_rate']:.0%} of "
        f"Obama's {imp['attacked']} photos; mean distance to Biden {imp['mean_clean_score']:.3f} -> "
        f"{imp['mean_score']:.3f}.",
        "",
        "**Every attack on the same four faces** (`attacks/suite/NAME/`, dodging, each image against its own "
        "clean embedding):",
        "",
        *table,
        "",
        f"**Success rate against epsilon** (`attacks/pgd-sweep/curve.png`): {curve}.",
        "",
        "Each folder has `config.json`, `results.tsv` (one row per face), `images/` (clean, adversarial and "
        "the magnified perturbation) and `summary.json` with the evaluation's warnings.",
        "",
    ]


def _generators(out: Path, progress: ProgressCallback | None) -> list[str]:
    from advface.generators import GENERATORS, load_generator
    from advface.images import save_image
    from advface.semantic.directions import montage
    from advface.semantic.learn import learn_directions

    generator = load_generator("digiface-dcgan")
    # 1. A grid of 16 faces from the offline generator.
    faces = generator.images(generator.sample(16, seed=0))
    save_image(out / "digiface-grid.png", montage(faces.reshape(4, 4, *faces.shape[1:]), scale=2))
    # 2. Attribute directions learned from 2,000 of its faces (the shipped set used 10,000).
    learned = learn_directions(out / "directions", generator, num_samples=2000, seed=0, progress=progress)
    rows = [
        "| attribute | measured as | SVM validation accuracy | sweep Spearman (median / mean of 16) |",
        "|---|---|---|---|",
    ]
    for name, row in learned.summary["directions"].items():
        unit = learned.directions.meta[name]["score"]
        rows.append(
            f"| {name} | {unit} | {row['svm_validation_accuracy']:.3f} | "
            f"{row['sweep_spearman_median']:.3f} / {row['sweep_spearman_mean']:.3f} |"
        )
    stylegan = GENERATORS["stylegan-ffhq"]
    ffhq = (
        "converted here: `advface semantic sample --generator stylegan-ffhq` renders it"
        if stylegan.available()
        else "not converted here: `advface zoo convert stylegan-ffhq karras2019stylegan-ffhq-1024x1024.pkl` "
        "reads NVIDIA's file (no TensorFlow 1 needed)"
    )
    return [
        "## Face generators and attribute directions (`advface semantic`)",
        "",
        "**digiface-dcgan** (`generators/digiface-grid.png`): 16 faces from the offline default generator, "
        "a DCGAN trained on DigiFace-1M synthetic faces (gan-face-generate 1.1.1).",
        "",
        f"**Directions learned for it** (`generators/directions/`, {learned.summary['seconds']:.0f} s): "
        f"{learned.summary['num_samples']} faces rendered, landmarked and scored, one linear SVM per "
        "attribute (InterFaceGAN's procedure), then each direction checked on -3..+3 sigma sweeps of 16 "
        "fresh faces; `sweeps/<attribute>.png` shows six of them.",
        "",
        *rows,
        "",
        f"StyleGAN-FFHQ: {ffhq}. Its InterFaceGAN directions ship in `data/directions/stylegan-ffhq`.",
        "",
    ]


def _semantic(out: Path, progress: ProgressCallback | None) -> list[str]:
    from advface.semantic.identities import generate_identities
    from advface.semantic.workflow import (
        CERTIFY_COLUMNS,
        build_setup,
        evaluate,
        ranking_text,
        run_attack,
        run_certification,
    )

    # 1. 200 identities from the offline generator, embedded by dlib-resnet (the gallery).
    t0 = time.perf_counter()
    generate_identities(out, "digiface-dcgan", "dlib-resnet", 200, seed=0, progress=progress)
    generated = time.perf_counter() - t0
    setup = build_setup(out)
    # 2. PGD and FAB-t on 20 of them, with the settings of the source's README run.
    seconds = {}
    for attack, settings in (
        ("pgd", {"steps": 5, "restarts": 5}),
        ("fab", {"steps": 5, "restarts": 2, "targets": 2}),
    ):
        t0 = time.perf_counter()
        run_attack(out, attack, instances=20, settings=settings, setup=setup, progress=progress)
        seconds[attack] = time.perf_counter() - t0
    # 3. Certificates for one identity, N = 10,000, isotropic and anisotropic noise.
    certificates = {}
    for noise in ("isotropic", "anisotropic"):
        t0 = time.perf_counter()
        path = run_certification(out, sigma=0.5, noise=noise, n=10_000, instances=1, setup=setup)
        certificates[noise] = (ResultsTable(path, CERTIFY_COLUMNS).rows(), time.perf_counter() - t0)
    # 4. Merge and evaluate.
    summary = evaluate(out, figures=5)
    rows = [
        "| attack | success | rate | mean M-norm of successes | attribute ranking (p-values) | s |",
        "|---|---|---|---|---|---|",
    ]
    for attack in ("pgd", "fab"):
        a = summary["attacks"][attack]
        p_values = ", ".join(f"{p:.2E}" for p in a["p_values"]) or "-"
        rows.append(
            f"| {attack} | {a['successes']}/{a['instances']} | {a['rate']:.0%} | {a['avg_mag']:.3f} | "
            f"{ranking_text(a)} ({p_values}) | {seconds[attack]:.0f} |"
        )
    budgets = ", ".join(f"{k} {v:.2f}" for k, v in setup.budgets.items())
    lines = [
        "## Semantic robustness (`advface semantic generate|attack|certify|eval`)",
        "",
        f"**Identities** (`semantic/identities/`): 200 `digiface-dcgan` faces aligned and embedded by "
        f"`dlib-resnet` in {generated:.0f} s; they are the gallery. **Attacks** on the first 20 move each "
        f"face along yaw, pitch, smile, mouth and eye opening within the budgets m = ({budgets}) (one sigma "
        "of each direction; the ellipsoid delta^T M delta <= 1, M = diag(1/m^2)); success = the nearest "
        "gallery identity is someone else. PGD stays inside the budget; FAB-t is unbounded and reports the "
        "smallest perturbation it finds.",
        "",
        *rows,
        "",
        "`semantic/attacks/<attack>/results.txt` is in the source's format; `figs/` holds original, "
        "adversarial and matched identity per success; `semantic/acc_vs_pert.png` plots accuracy against the "
        "perturbation.",
        "",
    ]
    for noise, (table, took) in certificates.items():
        row = table[0]
        verdict = (
            "abstained"
            if row["predict"] == "-1"
            else f"certified radius {float(row['radius_m']):.3f} (M-norm)"
        )
        lines.append(
            f"**Certificate, {noise} noise, sigma 0.5, N = 10,000** (identity 0): {verdict}, {took:.0f} s."
        )
        lines.append("")
    return lines


def run_demo(
    out: str | Path, *, samples: str | Path | None = None, progress: ProgressCallback | None = None
) -> Path:
    """Run every demo section into the run folder ``out`` and write ``out/report.md``."""
    out = Path(out)
    samples = Path(samples) if samples else default_samples()
    write_config(out, "demo", {"out": out, "samples": samples})
    t0 = time.perf_counter()
    sections = _recognition(samples, out / "recognition", progress)
    sections += _training(samples, out / "training", progress)
    sections += _glasses(samples, out / "glasses", progress)
    sections += _attacks(samples, out / "attacks", progress)
    sections += _generators(out / "generators", progress)
    sections += _semantic(out / "semantic", progress)
    text = [
        "# advface demo report",
        "",
        f"Run folder `{out}`; settings and versions in `config.json`. Took {time.perf_counter() - t0:.0f} s.",
        "",
        *sections,
    ]
    (out / "report.md").write_text("\n".join(text))
    return out / "report.md"
