"""PGD steps per second: advface's PGD vs the Adversarial Robustness Toolbox's TensorFlow v2 PGD.

The same Keras model (dlib-resnet), the same batch of 32 aligned chips (the sample faces, repeated),
the same attack: untargeted dodging (push each embedding away from its clean embedding, Euclidean
distance), L-infinity, epsilon 4/255, step 1/255, 10 steps, one random start. Both whole calls are timed
(ART's ``generate`` and advface's ``PGD.__call__``, each including its own clean and final forward
passes), median of several repeats after a warm-up, measured in one run. Prints steps/s for each, the
ratio, and the mean distance each attack reached.

ART's estimator is given the embedding model itself with the distance as its loss
(``TensorFlowV2Classifier(loss_object=...)``, the clean embeddings as ``y``); ART needs its random start
(``num_random_init=1``): from the clean image the distance has no gradient.

Where the difference comes from: advface runs each step (forward, backward, update, projection,
best-iterate bookkeeping) as one compiled ``tf.function``; ART calls the Keras model eagerly under a
``GradientTape`` each step (its estimator refuses graph mode) and adds eager preprocessing, a NaN check
and numpy projection. XLA (``jit_compile``) made the step 3x slower on a CPU, so it is not used.

    python benchmarks/pgd_vs_art.py [--repeats 3] [--steps 10]

adversarial-robustness-toolbox is a dev-only dependency (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from advface.alignment import FaceAligner  # noqa: E402
from advface.attacks.base import Dodge  # noqa: E402
from advface.attacks.pgd import PGD  # noqa: E402
from advface.images import list_images, load_image  # noqa: E402
from advface.zoo import load_model  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (tracing, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    aligner = FaceAligner()
    chips = []
    for p in list_images(SAMPLES):
        faces = aligner.align(load_image(p), "dlib")
        if faces:
            chips.append(faces[0].chip)
    chips = np.stack([chips[i % len(chips)] for i in range(args.batch_size)])
    model = load_model("dlib-resnet")
    clean = model.embed(chips)
    epsilon, step = 4 / 255, 1 / 255

    # advface
    ours = PGD(
        epsilon=epsilon, steps=args.steps, step_size=step, random_start=True, batch_size=args.batch_size
    )
    goal = Dodge(clean, paired=True)
    ours_s, result = median_seconds(lambda: ours(model, chips, goal, seed=0), args.repeats)
    ours_d = np.linalg.norm(model.embed(result.images) - clean, axis=1)

    # ART
    def distance(y_true, y_pred):  # ART ascends its loss when untargeted
        return tf.reduce_sum(tf.sqrt(tf.reduce_sum(tf.square(y_pred - y_true), axis=1) + 1e-12))

    estimator = TensorFlowV2Classifier(
        model=model.keras_model,
        nb_classes=clean.shape[1],
        input_shape=chips.shape[1:],
        loss_object=distance,
        clip_values=(0.0, 1.0),
    )
    art = ProjectedGradientDescent(
        estimator=estimator,
        norm=np.inf,
        eps=epsilon,
        eps_step=step,
        max_iter=args.steps,
        targeted=False,
        num_random_init=1,
        batch_size=args.batch_size,
        verbose=False,
    )
    art_s, art_images = median_seconds(lambda: art.generate(chips, y=clean), args.repeats)
    art_d = np.linalg.norm(model.embed(art_images.astype(np.float32)) - clean, axis=1)

    print(
        f"PGD Linf eps 4/255, step 1/255, {args.steps} steps, batch {args.batch_size}, dlib-resnet, dodging"
    )
    for name, seconds, d in (("advface PGD  ", ours_s, ours_d), ("ART PGD (TF2)", art_s, art_d)):
        print(
            f"  {name}: {args.steps / seconds:6.2f} steps/s ({seconds:.2f} s/call), distance {d.mean():.3f}"
        )
    print(f"  ratio (advface / ART): {art_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
