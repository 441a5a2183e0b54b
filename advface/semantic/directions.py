"""Attribute directions in a generator's latent space (InterFaceGAN, Shen et al., CVPR 2020).

A direction is the unit normal of a linear SVM that separates latents whose rendered faces score high on
an attribute from those that score low. Moving a latent along it changes that attribute. advface ships:

* ``data/directions/stylegan-ffhq``: InterFaceGAN's own StyleGAN-FFHQ W-space boundaries (age, eyeglasses,
  gender, pose, smile), the ones the semantic-robustness method uses;
* ``data/directions/digiface-dcgan``: directions learned here for the offline generator with
  :func:`learn_directions` on the measurable scores of :mod:`advface.semantic.scorers`.

A folder of directions holds ``directions.json`` (generator, latent space and size, and per direction
its file, ``sigma`` and how it was made) and one ``<name>.npy`` per direction, shape ``(1, latent_size)``
float64 as InterFaceGAN stores them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError

DATA = Path(__file__).resolve().parent.parent.parent / "data" / "directions"


@dataclass(frozen=True)
class Directions:
    """Unit attribute directions of one generator.

    Attributes:
        generator: the generator's registry name.
        latent_space: ``"z"`` or ``"w"``.
        names: attribute names, in order.
        matrix: ``(k, latent_size)`` float64, unit rows in ``names`` order.
        sigmas: ``(k,)`` standard deviation of sampled latents projected on each direction: the unit of
            ``-3 .. +3 sigma`` sweeps.
        meta: per name, how the direction was made (source, SVM validation accuracy, samples ...).
        provenance: where the set comes from, and its licence.
    """

    generator: str
    latent_space: str
    names: tuple[str, ...]
    matrix: np.ndarray = field(repr=False)
    sigmas: np.ndarray = field(repr=False)
    meta: dict = field(default_factory=dict, repr=False)
    provenance: str = ""

    @property
    def latent_size(self) -> int:
        return int(self.matrix.shape[1])

    def vector(self, name: str) -> np.ndarray:
        """The unit direction ``name``, ``(latent_size,)``."""
        return self.matrix[self.index(name)]

    def index(self, name: str) -> int:
        if name not in self.names:
            raise AdvfaceError(
                f"No direction {name!r} for {self.generator}. Received: attribute={name!r}. "
                f"Known: {', '.join(self.names)}."
            )
        return self.names.index(name)

    def subset(self, names) -> Directions:
        """The directions ``names`` only (in that order)."""
        rows = [self.index(n) for n in names]
        return Directions(
            self.generator,
            self.latent_space,
            tuple(names),
            self.matrix[rows],
            self.sigmas[rows],
            {n: self.meta.get(n, {}) for n in names},
            self.provenance,
        )

    def gram(self) -> np.ndarray:
        """Cosines between the directions, ``(k, k)`` (they need not be orthogonal)."""
        return self.matrix @ self.matrix.T

    def save(self, folder) -> Path:
        """Write ``directions.json`` and one ``<name>.npy`` per direction into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        entries = {}
        for name, vector, sigma in zip(self.names, self.matrix, self.sigmas, strict=True):
            np.save(folder / f"{name}.npy", vector[None].astype(np.float64))
            entries[name] = {"file": f"{name}.npy", "sigma": float(sigma), **self.meta.get(name, {})}
        index = {
            "generator": self.generator,
            "latent_space": self.latent_space,
            "latent_size": self.latent_size,
            "provenance": self.provenance,
            "directions": entries,
        }
        tmp = folder / "directions.json.tmp"
        tmp.write_text(json.dumps(index, indent=2) + "\n")
        os.replace(tmp, folder / "directions.json")
        return folder


def load_directions(source) -> Directions:
    """Directions from a folder with ``directions.json``, or the set shipped for a generator name.

    Args:
        source: a folder, or a generator name (``"digiface-dcgan"``, ``"stylegan-ffhq"``).
    """
    folder = Path(source)
    if not (folder / "directions.json").is_file():
        shipped = DATA / str(source)
        if not (shipped / "directions.json").is_file():
            known = sorted(p.name for p in DATA.glob("*") if (p / "directions.json").is_file())
            raise AdvfaceError(
                f"No directions found. Received: directions={str(source)!r}. Give a folder with "
                "directions.json (written by `advface semantic directions`) or one of these generators: "
                f"{', '.join(known)}."
            )
        folder = shipped
    try:
        index = json.loads((folder / "directions.json").read_text())
        entries = index["directions"]
        names = tuple(entries)
        rows, sigmas = [], []
        for name in names:
            vector = (
                np.load(folder / entries[name]["file"], allow_pickle=False).astype(np.float64).reshape(-1)
            )
            rows.append(vector)
            sigmas.append(float(entries[name].get("sigma", 1.0)))
        matrix = np.stack(rows)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdvfaceError(
            f"{folder} does not hold readable directions ({type(exc).__name__}: {exc}). Re-create them with "
            "`advface semantic directions`."
        ) from None
    if matrix.shape[1] != index.get("latent_size", matrix.shape[1]):
        raise AdvfaceError(
            f"{folder}: directions of length {matrix.shape[1]}, but latent_size says otherwise."
        )
    norms = np.linalg.norm(matrix, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-4):
        raise AdvfaceError(f"{folder}: directions must be unit vectors. Received norms {np.round(norms, 4)}.")
    meta = {n: {k: v for k, v in entries[n].items() if k not in ("file", "sigma")} for n in names}
    return Directions(
        str(index.get("generator", "")),
        str(index.get("latent_space", "")),
        names,
        matrix,
        np.asarray(sigmas),
        meta,
        str(index.get("provenance", "")),
    )


@dataclass(frozen=True)
class Boundary:
    """One fitted SVM: its unit normal and how well it separates.

    Attributes:
        normal: ``(latent_size,)`` unit vector pointing towards high scores.
        validation_accuracy: accuracy on the held-out share of the chosen extreme samples.
        training_accuracy: accuracy on the samples it was fitted on.
        remaining_accuracy: accuracy on all the other (middle) samples, labelled by the midpoint of the
            highest and lowest score (as InterFaceGAN).
        positives, negatives: samples per class; ``train``/``validation``: per split, both classes.
    """

    normal: np.ndarray
    validation_accuracy: float
    training_accuracy: float
    remaining_accuracy: float
    positives: int
    negatives: int
    train: int
    validation: int


def fit_boundary(
    latents: np.ndarray, scores: np.ndarray, *, ratio: float = 0.1, split: float = 0.7, seed: int = 0
) -> Boundary:
    """InterFaceGAN's ``train_boundary``: a linear SVM between the top and bottom ``ratio`` of the scores.

    1. Drop samples without a score (no face found), sort by score.
    2. Positives: the highest ``ratio`` of the samples; negatives: the lowest ``ratio``.
    3. Shuffle each class, fit ``sklearn.svm.SVC(kernel="linear")`` on ``split`` of it, validate on the rest.
    4. The direction is the SVM normal, scaled to unit length (it points towards high scores).

    Args:
        latents: ``(N, d)``.
        scores: ``(N,)``, NaN for samples to leave out.
        ratio: share of the samples taken as each class (InterFaceGAN uses 0.02 of 500,000 samples).
        split: share of each class used for fitting.
        seed: shuffling seed.
    """
    from sklearn import svm

    if not 0 < ratio <= 0.5 or not 0 < split < 1:
        raise AdvfaceError(
            f"`ratio` must be in (0, 0.5] and `split` in (0, 1). Received: ratio={ratio}, split={split}."
        )
    keep = np.isfinite(scores)
    latents, scores = np.asarray(latents, np.float64)[keep], np.asarray(scores, np.float64)[keep]
    order = np.argsort(scores, kind="stable")[::-1]
    chosen = int(len(order) * ratio)
    if chosen < 5:
        raise AdvfaceError(
            f"Too few scored samples to fit a boundary: {len(order)} with a face, so {chosen} per class at "
            f"ratio={ratio}. Received: num_samples too small. Use more samples or a larger ratio."
        )
    rng = np.random.default_rng(seed)
    positive, negative = rng.permutation(order[:chosen]), rng.permutation(order[-chosen:])
    remaining = order[chosen:-chosen]
    cut = int(chosen * split)
    train = np.concatenate([positive[:cut], negative[:cut]])
    val = np.concatenate([positive[cut:], negative[cut:]])
    labels = np.zeros(len(scores), np.int64)
    labels[positive] = 1
    classifier = svm.SVC(kernel="linear")
    classifier.fit(latents[train], labels[train])
    normal = classifier.coef_.reshape(-1)
    normal = normal / np.linalg.norm(normal)
    # InterFaceGAN labels the middle samples by the midpoint of the extreme scores.
    midpoint = (scores.max() + scores.min()) / 2
    remaining_accuracy = (
        float(np.mean(classifier.predict(latents[remaining]) == (scores[remaining] >= midpoint)))
        if len(remaining)
        else float("nan")
    )
    return Boundary(
        normal=normal,
        validation_accuracy=float(classifier.score(latents[val], labels[val])),
        training_accuracy=float(classifier.score(latents[train], labels[train])),
        remaining_accuracy=remaining_accuracy,
        positives=chosen,
        negatives=chosen,
        train=len(train),
        validation=len(val),
    )


def sweep_latents(latents: np.ndarray, direction: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``latents + t * direction`` for each offset t: ``(B, d)`` -> ``(B, T, d)``."""
    latents = np.asarray(latents, np.float32)
    return latents[:, None, :] + np.asarray(offsets, np.float32)[None, :, None] * direction[None, None, :]


def montage(images: np.ndarray, *, labels: list[str] | None = None, scale: int = 1) -> np.ndarray:
    """A ``(rows, cols, H, W, 3)`` grid of images as one ``(rows*H [+ header], cols*W, 3)`` image.

    ``labels`` (one per column) are drawn in a header row.
    """
    import cv2

    rows, cols, height, width = images.shape[:4]
    grid = images.transpose(0, 2, 1, 3, 4).reshape(rows * height, cols * width, 3)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    if not labels:
        return grid
    header = np.ones((18, grid.shape[1], 3), np.float32)
    cell = grid.shape[1] // cols
    for i, text in enumerate(labels):
        cv2.putText(
            header, text, (i * cell + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
    return np.concatenate([header, grid], axis=0)
