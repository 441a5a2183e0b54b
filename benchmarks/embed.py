"""Faces per second: advface's Keras dlib-resnet (batch 32) vs dlib's own compute_face_descriptor.

Both embed the same 32 aligned chips (the sample faces, repeated), measured in one run, median of
several repeats after a warm-up. Prints both rates, their ratio and the largest descriptor difference.

    python benchmarks/embed.py [--repeats 5] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dlib  # noqa: E402
import numpy as np  # noqa: E402

from advface.alignment import FaceAligner  # noqa: E402
from advface.assets import dlib_model_path  # noqa: E402
from advface.images import list_images, load_image, to_uint8  # noqa: E402
from advface.zoo import load_model  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (tracing, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    aligner = FaceAligner()
    chips = [aligner.align_one(load_image(p), "dlib", source=str(p)).chip for p in list_images(SAMPLES)]
    chips = np.stack([chips[i % len(chips)] for i in range(args.batch_size)])
    pixels = to_uint8(chips)  # dlib takes uint8; feed both models the same 8-bit chips
    chips = pixels.astype(np.float32) / 255.0

    model = load_model("dlib-resnet")
    net = dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))
    batch = list(pixels)

    ours = median_seconds(lambda: model.embed(chips, batch_size=args.batch_size), args.repeats)
    theirs = median_seconds(lambda: net.compute_face_descriptor(batch), max(1, args.repeats // 2))
    diff = np.abs(
        model.embed(chips) - np.array([np.array(d) for d in net.compute_face_descriptor(batch)])
    ).max()

    n = len(chips)
    print(f"chips: {n} x 150x150 (batch {args.batch_size}); cores: {os.cpu_count()}")
    print(f"advface dlib-resnet (Keras/TF): {n / ours:8.1f} faces/s  ({1000 * ours / n:.2f} ms/face)")
    print(f"dlib compute_face_descriptor : {n / theirs:8.1f} faces/s  ({1000 * theirs / n:.2f} ms/face)")
    print(f"ratio (advface / dlib)       : {theirs / ours:8.1f}x")
    print(f"max |descriptor difference|  : {diff:.2e}")


if __name__ == "__main__":
    main()
