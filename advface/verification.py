"""Verification (1:1) and identification (1:N) over face embeddings.

Both are thin layers over a :class:`~advface.zoo.FaceModel`'s embeddings: a distance (Euclidean, or
cosine distance ``1 - cos``), a threshold (same person when ``distance <= threshold``) and, for 1:N, a
gallery of labelled embeddings. Thresholds can be calibrated at a target false-accept rate (FAR) from
labelled pairs instead of guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError

METRICS = ("euclidean", "cosine")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise AdvfaceError(f"Unknown distance. Received: metric={metric!r}. Known: {', '.join(METRICS)}.")


def _as_embeddings(x, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    if array.ndim != 2:
        raise AdvfaceError(
            f"`{name}` must be embeddings of shape (N, D). Received: {name}.shape={array.shape}."
        )
    return array


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def distances(a, b, metric: str = "euclidean") -> np.ndarray:
    """Row-wise distances ``(N,)`` between embeddings ``a`` and ``b``, both ``(N, D)``."""
    _check_metric(metric)
    a, b = _as_embeddings(a, "a"), _as_embeddings(b, "b")
    if a.shape != b.shape:
        raise AdvfaceError(
            f"`a` and `b` must have the same shape. Received: a.shape={a.shape}, b.shape={b.shape}."
        )
    if metric == "euclidean":
        return np.linalg.norm(a - b, axis=-1)
    return 1.0 - np.sum(_unit(a) * _unit(b), axis=-1)


def pairwise_distances(a, b, metric: str = "euclidean") -> np.ndarray:
    """All distances ``(N, M)`` between embeddings ``a`` ``(N, D)`` and ``b`` ``(M, D)``."""
    _check_metric(metric)
    # float64: the expansion |a|^2 + |b|^2 - 2ab loses digits in float32.
    a, b = _as_embeddings(a, "a").astype(np.float64), _as_embeddings(b, "b").astype(np.float64)
    if a.shape[1] != b.shape[1]:
        raise AdvfaceError(f"Embedding sizes differ. Received: a.shape={a.shape}, b.shape={b.shape}.")
    if metric == "cosine":
        return 1.0 - _unit(a) @ _unit(b).T
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(squared, 0.0))


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen at a target false-accept rate.

    Attributes:
        threshold: accept (same person) when ``distance <= threshold``.
        target_far: the FAR asked for.
        far: the FAR this threshold achieves on the impostor pairs (<= target_far).
        tar: the true-accept rate it achieves on the genuine pairs.
        num_genuine, num_impostor: pairs used. FARs below ``1 / num_impostor`` cannot be measured.
    """

    threshold: float
    target_far: float
    far: float
    tar: float
    num_genuine: int
    num_impostor: int


def calibrate_threshold(distances_, same, *, target_far: float) -> Calibration:
    """The largest threshold whose false-accept rate on labelled pairs is at most ``target_far``.

    Args:
        distances_: ``(P,)`` distances of labelled pairs.
        same: ``(P,)`` booleans, True for genuine pairs (same person).
        target_far: in ``(0, 1)``.
    """
    d = np.asarray(distances_, dtype=np.float64).reshape(-1)
    same = np.asarray(same, dtype=bool).reshape(-1)
    if d.shape != same.shape:
        raise AdvfaceError(
            f"`distances` and `same` differ in length. Received: {d.shape[0]} and {same.shape[0]}."
        )
    if not 0.0 < target_far < 1.0:
        raise AdvfaceError(f"`target_far` must be in (0, 1). Received: target_far={target_far}.")
    impostor, genuine = np.sort(d[~same]), d[same]
    if impostor.size == 0 or genuine.size == 0:
        raise AdvfaceError(
            "Calibration needs both genuine and impostor pairs. "
            f"Received: {genuine.size} genuine, {impostor.size} impostor pairs."
        )
    allowed = int(np.floor(target_far * impostor.size + 1e-9))  # false accepts we may make
    if allowed >= impostor.size:
        threshold = float(d.max())
    else:
        # Just below the first impostor distance we must reject; ties at it are rejected too.
        threshold = float(np.nextafter(impostor[allowed], -np.inf))
    return Calibration(
        threshold=threshold,
        target_far=float(target_far),
        far=float(np.mean(impostor <= threshold)),
        tar=float(np.mean(genuine <= threshold)),
        num_genuine=int(genuine.size),
        num_impostor=int(impostor.size),
    )


@dataclass(frozen=True)
class Verification:
    """One 1:1 decision."""

    distance: float
    threshold: float
    metric: str

    @property
    def same(self) -> bool:
        return self.distance <= self.threshold


class Verifier:
    """1:1 verification with a model's embeddings.

    Args:
        model: a :class:`~advface.zoo.FaceModel`.
        threshold: overrides the model's default (e.g. from :func:`calibrate_threshold`).
    """

    def __init__(self, model, *, threshold: float | None = None):
        if getattr(model, "kind", "embedding") != "embedding":
            raise AdvfaceError(
                f"Verification compares embeddings, and {model.name} is a {model.kind}. Received: "
                f"model={model.name!r}. Use an embedding model (advface zoo list), or model.classify()."
            )
        self.model = model
        self.threshold = float(model.threshold if threshold is None else threshold)

    def verify(self, a_images, b_images) -> list[Verification]:
        """Decide pair by pair whether chips ``a_images[i]`` and ``b_images[i]`` show the same person."""
        d = self.model.distance(self.model.embed(a_images), self.model.embed(b_images))
        return [Verification(float(x), self.threshold, self.model.spec.distance) for x in d]

    def calibrate(self, distances_, same, *, target_far: float) -> Calibration:
        """Set this verifier's threshold at ``target_far`` from labelled pair distances."""
        result = calibrate_threshold(distances_, same, target_far=target_far)
        self.threshold = result.threshold
        return result


@dataclass(frozen=True)
class Match:
    """A gallery identity and its distance to the probe (the closest of its images)."""

    label: str
    distance: float


@dataclass(frozen=True)
class Identification:
    """The result of one 1:N search.

    Attributes:
        matches: the k nearest identities, nearest first.
        threshold: open-set rejection threshold.
    """

    matches: tuple[Match, ...]
    threshold: float

    @property
    def accepted(self) -> bool:
        return bool(self.matches) and self.matches[0].distance <= self.threshold

    @property
    def label(self) -> str | None:
        """The identity, or ``None`` when the probe is rejected as unknown."""
        return self.matches[0].label if self.accepted else None


def label_from_filename(path: str | Path) -> str:
    """The identity of a file in a flat gallery folder: its stem without trailing digits or separators
    (``obama2.jpg`` -> ``obama``)."""
    stem = Path(path).stem
    return re.sub(r"[\s_\-]*\d+$", "", stem) or stem


class Gallery:
    """Labelled embeddings for 1:N identification with open-set rejection.

    Args:
        embeddings: ``(M, D)`` embeddings of the enrolled images.
        labels: ``M`` identity labels (several images may share one).
        metric: the model's distance.
        threshold: a probe whose nearest identity is farther than this is rejected as unknown.
    """

    def __init__(self, embeddings, labels: Sequence[str], *, metric: str, threshold: float):
        _check_metric(metric)
        self.embeddings = _as_embeddings(embeddings, "embeddings")
        self.labels = [str(label) for label in labels]
        if len(self.labels) != len(self.embeddings):
            raise AdvfaceError(
                "One label per embedding. "
                f"Received: {len(self.embeddings)} embeddings, {len(self.labels)} labels."
            )
        self.metric = metric
        self.threshold = float(threshold)

    @property
    def identities(self) -> list[str]:
        return sorted(set(self.labels))

    def search(self, probes, *, k: int = 5) -> list[Identification]:
        """The ``k`` nearest identities of each probe embedding ``(N, D)``."""
        if len(self.labels) == 0:
            raise AdvfaceError("The gallery is empty: enrol at least one face.")
        if k < 1:
            raise AdvfaceError(f"`k` must be >= 1. Received: k={k}.")
        d = pairwise_distances(probes, self.embeddings, self.metric)
        names = self.identities
        index = {name: i for i, name in enumerate(names)}
        columns = np.array([index[label] for label in self.labels])
        # Distance to an identity = to its closest enrolled image.
        per_identity = np.full((d.shape[0], len(names)), np.inf)
        np.minimum.at(per_identity.T, columns, d.T)
        results = []
        for row in per_identity:
            order = np.argsort(row, kind="stable")[:k]
            matches = tuple(Match(names[j], float(row[j])) for j in order)
            results.append(Identification(matches, self.threshold))
        return results


def gallery_files(folder) -> list[tuple[Path, str]]:
    """``(image, identity)`` pairs of a gallery folder: one sub-folder per person, or flat ``name[N].jpg``
    files named after the person (:func:`label_from_filename`)."""
    from advface.errors import AdvfaceError
    from advface.images import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise AdvfaceError(
            f"A gallery must be a folder of face images. Received: gallery={str(folder)!r}. Use a folder "
            "with one sub-folder per person (alice/1.jpg), or files named after the person (alice_2.jpg)."
        )
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    if subfolders:
        return [(f, sub.name) for sub in subfolders for f in list_images(sub)]
    return [(f, label_from_filename(f)) for f in list_images(folder)]
