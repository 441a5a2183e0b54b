"""Read agns-port's Keras 2 ``.h5`` files (TF 2.4 ``model.save`` / ``save_weights``) into Keras 3 models.

agns-port (``networks/face_nets.py``) saved ``Sequential([base, head])`` models:

* ``vgg_10.h5`` / ``vgg_143.h5``: base ``VGG_Descriptor`` (ImageNet VGG16 to ``fc2``, frozen), head
  ``VGG10_head`` / ``VGG143_head`` (``Logits``, then a weightless Softmax ``Simplex``);
* ``of10.h5`` / ``of143.h5``: base ``Openface_NN4.Small2.v1``, head ``OF10_head`` / ``OF143_head``
  (``Fully_Connected``, ``Logits``, ``Simplex``);
* ``openface.h5``: the OpenFace base alone (``pretrain_openface_model``).

The Keras 2 HDF5 layout (``keras/saving/hdf5_format.py`` of TF 2.4): a full-model file has root attributes
``keras_version``, ``backend``, ``model_config`` and a group ``model_weights``; a ``save_weights`` file has
the same content at the root. That group's attribute ``layer_names`` lists the top-level layers; each has
a group whose attribute ``weight_names`` lists its variables (``b"block1_conv1/kernel:0"``), each stored
as a dataset at ``<layer>/<weight name>``. Long attributes are split into ``name0``, ``name1``, ...

Variables of a nested model are listed trainable first, then non-trainable (BatchNormalization moving
statistics), each pass in layer order. Layers the source did not name got names from global counters of
its training session (``conv2d_17``, ``batch_normalization_3``, ``dense``), so those numbers mean nothing
here. The conversion table therefore matches:

* layers the source named (``First_Conv2D``, ``Inception_2_Conv2D``, ``block1_conv1`` ... ``fc2``,
  ``Fully_Connected``, ``Logits``) by name;
* the others by their order of first appearance among the layers of the same kind (conv, batch
  normalisation, dense) in the same scope (the top level, or an ``Inception_*`` module whose sublayers are
  listed in the source's creation order), checking each variable's kind and shape.

Any weight of the file that matches nothing, any variable of the model the file lacks, and any shape that
differs is reported, all together, in one :class:`~advface.errors.WeightsError`; nothing is assigned
unless everything fits. The file is read with h5py only: it is never deserialised by Keras (a Keras 2
model config may hold Lambda layers with code).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np
from keras import layers

from advface.errors import WeightsError
from advface.networks.openface import (
    InceptionModule,
    InceptionModuleShrink,
    build_openface_base,
    build_openface_classifier,
)
from advface.networks.vgg import build_vgg_classifier
from advface.savedmodels import resolve_weights

BUILDERS: dict[str, Callable[[], keras.Model]] = {
    "vgg10": lambda: build_vgg_classifier(10),
    "vgg143": lambda: build_vgg_classifier(143),
    "openface10": lambda: build_openface_classifier(10),
    "openface143": lambda: build_openface_classifier(143),
    "openface_base": build_openface_base,
}
SOURCE_FILES = {
    "vgg10": "vgg_10.h5",
    "vgg143": "vgg_143.h5",
    "openface10": "of10.h5",
    "openface143": "of143.h5",
    "openface_base": "openface.h5",
}
# The nested models of the source's Sequential([base, head]); they may prefix weight names.
_CONTAINERS = {
    "VGG_Descriptor", "Openface_NN4.Small2.v1", "VGG10_head", "VGG143_head", "OF10_head", "OF143_head",
}  # fmt: skip
# Keras 2's names for unnamed models, which may also prefix weight names (a re-loaded nested model).
_AUTO_CONTAINER = re.compile(r"^(sequential|model|functional)(_\d+)?$")
# Layers of ours that the source named the same (all others were auto-named there).
_OPENFACE_NAMED = {"First_Conv2D", "Inception_2_Conv2D", "Fully_Connected", "Logits"}
_VGG_MARKERS = {"block1_conv1", "fc1", "fc2"}
_OPENFACE_MARKERS = {"First_Conv2D", "Inception_2_Conv2D"}
_BN_KINDS = ("gamma", "beta", "moving_mean", "moving_variance")
_LIST_LIMIT = 10


@dataclass(frozen=True)
class _Stored:
    """One weight of the file.

    Attributes:
        name: the weight name as stored, e.g. ``"Inception_3a/conv2d_17/kernel:0"``.
        dataset: the dataset's path inside the weights group.
        shape: its shape.
        scope: ``""`` or the module the layer lives in (``"Inception_3a"``).
        layer: the layer's name in the file (``"conv2d_17"``).
        kind: ``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean`` or ``moving_variance``.
    """

    name: str
    dataset: str
    shape: tuple
    scope: str
    layer: str
    kind: str


@dataclass(frozen=True)
class _Target:
    """One weighted layer of our model and the key under which the file's layer must match it."""

    key: tuple
    label: str  # for messages: our layer path and how the source named it
    variables: dict  # kind -> keras.Variable


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes | np.bytes_) else str(value)


def _attr_list(group: h5py.Group, name: str) -> list[str] | None:
    """A list attribute as Keras 2 wrote it (possibly split into ``name0``, ``name1``, ...), or None."""
    if name in group.attrs:
        return [_text(v) for v in np.atleast_1d(group.attrs[name])]
    if f"{name}0" not in group.attrs:
        return None
    values, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
        values += [_text(v) for v in np.atleast_1d(group.attrs[f"{name}{chunk}"])]
        chunk += 1
    return values


def _weights_group(f: h5py.File, path: Path) -> h5py.Group:
    """The group holding ``layer_names`` (``model_weights`` of a full model, or the root), after checks."""
    for group in (f.get("model_weights"), f):
        if isinstance(group, h5py.Group) and _attr_list(group, "layer_names") is not None:
            version = _text(group.attrs.get("keras_version", f.attrs.get("keras_version", "")))
            if version.startswith("3"):
                raise WeightsError(
                    f"{path.name} was saved by Keras {version} (the legacy .h5 format), not by agns-port's "
                    f"Keras 2. Received: path={str(path)!r}. Save the model's weights with "
                    "model.save_weights('x.weights.h5') and pass weights='x.weights.h5' to the builder."
                )
            return group
    if "layers" in f or "vars" in f:
        raise WeightsError(
            f"{path.name} is a Keras 3 weights file, not a Keras 2 model. Received: path={str(path)!r}. "
            "Load it with the builder's weights= argument, e.g. openface10(weights=path), not with "
            "from_keras2_h5."
        )
    raise WeightsError(
        f"{path.name} is an HDF5 file but not a Keras 2 model or weights file (no 'layer_names' attribute "
        f"at its root or in 'model_weights'). Received: path={str(path)!r}, top-level entries "
        f"{sorted(f.keys())[:_LIST_LIMIT]}. Point to a file agns-port saved with model.save(...) "
        f"({', '.join(SOURCE_FILES.values())})."
    )


def _parse(name: str, group: str) -> tuple[str, str, str]:
    """``(scope, layer, kind)`` of a Keras 2 weight name, without the ``:0`` and the containers' prefixes."""
    parts = re.sub(r":\d+$", "", name).split("/")
    while len(parts) > 2 and (parts[0] in _CONTAINERS or _AUTO_CONTAINER.match(parts[0])):
        parts.pop(0)
    if len(parts) == 1:
        return "", group, parts[0]
    return "/".join(parts[:-2]), parts[-2], parts[-1]


def _read_listing(weights: h5py.Group, problems: list[str]) -> tuple[list[str], list[_Stored]]:
    """The top-level layer names and every weight the file lists (in file order)."""
    names = _attr_list(weights, "layer_names") or []
    stored = []
    for group_name in names:
        group = weights.get(group_name)
        if not isinstance(group, h5py.Group):
            problems.append(f"layer_names lists {group_name!r} but the file has no such group")
            continue
        for weight_name in _attr_list(group, "weight_names") or []:
            dataset = group.get(weight_name)
            if not isinstance(dataset, h5py.Dataset):
                problems.append(f"weight_names of {group_name!r} lists {weight_name!r} but it is not stored")
                continue
            if not np.issubdtype(dataset.dtype, np.floating):
                problems.append(f"{weight_name} holds {dataset.dtype} values, not floats")
                continue
            scope, layer, kind = _parse(weight_name, group_name)
            stored.append(_Stored(weight_name, dataset.name, tuple(dataset.shape), scope, layer, kind))
    top = weights.get("top_level_model_weights")
    if isinstance(top, h5py.Group) and _attr_list(top, "weight_names"):
        problems.append(
            f"top_level_model_weights holds {_attr_list(top, 'weight_names')}, which no layer owns"
        )
    return names, stored


def _infer_arch(layer_names: list[str], stored: list[_Stored]) -> str | None:
    """The architecture a file holds, from its layer names and the ``Logits`` shape; None when unclear."""
    seen = {s.layer for s in stored} | {s.scope.split("/")[0] for s in stored} | set(layer_names)
    vgg = bool(seen & (_VGG_MARKERS | {"VGG_Descriptor"}))
    openface = bool(seen & (_OPENFACE_MARKERS | {"Openface_NN4.Small2.v1"})) or any(
        s.scope.startswith("Inception_") for s in stored
    )
    if vgg == openface:
        return None
    logits = [s.shape[-1] for s in stored if s.layer == "Logits" and s.kind == "kernel" and s.shape]
    family = "vgg" if vgg else "openface"
    if not logits:
        return None if vgg or "Fully_Connected" in seen else "openface_base"
    return f"{family}{logits[0]}" if len(logits) == 1 and logits[0] in (10, 143) else None


def _family(layer) -> str | None:
    if isinstance(layer, layers.Conv2D):
        return "conv"
    if isinstance(layer, layers.Dense):
        return "dense"
    if isinstance(layer, layers.BatchNormalization):
        return "bn"
    return None


_KERAS2_NAME = {"conv": "conv2d", "dense": "dense", "bn": "batch_normalization"}


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _targets(model: keras.Model, arch: str) -> list[_Target]:
    """Our model's weighted layers, keyed as the file's layers will be (see the module docstring).

    In the VGG models every layer has the name the source gave it (keras.applications' and ``Logits``);
    in the OpenFace models only :data:`_OPENFACE_NAMED` do.
    """
    source_named = {layer.name for layer in model.layers} if arch.startswith("vgg") else _OPENFACE_NAMED
    targets: list[_Target] = []
    counts: dict[tuple[str, str], int] = {}

    def add(layer, scope: str, path: str) -> None:
        variables = {v.name: v for v in layer.weights}
        if not variables:
            return
        if scope == "" and layer.name in source_named:
            targets.append(_Target(("", layer.name), f"{layer.name}", variables))
            return
        family = _family(layer)
        assert family is not None, f"no conversion rule for {path} ({type(layer).__name__})"
        index = counts.get((scope, family), 0)
        counts[(scope, family)] = index + 1
        where = f" in {scope}" if scope else " at the top level"
        label = f"{path} (the {_ordinal(index + 1)} auto-named {_KERAS2_NAME[family]}{where})"
        targets.append(_Target((scope, family, index), label, variables))

    for layer in model.layers:
        if isinstance(layer, InceptionModule | InceptionModuleShrink):
            for attribute in layer.SUBLAYER_ORDER:
                sub = getattr(layer, attribute, None)
                if sub is not None:
                    add(sub, layer.name, f"{layer.name}/{sub.name}")
        else:
            add(layer, "", layer.name)
    return targets


def _stored_family(kinds: dict[str, _Stored]) -> str | None:
    if "kernel" in kinds:
        return {4: "conv", 2: "dense"}.get(len(kinds["kernel"].shape))
    if kinds and set(kinds) <= set(_BN_KINDS):
        return "bn"
    return None


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:_LIST_LIMIT])
    return f"{shown}; and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else shown


def _match(targets: list[_Target], stored: list[_Stored], problems: list[str]) -> list[tuple]:
    """``[(variable, stored weight)]`` for every variable of ``targets``; problems are appended."""
    scopes = {t.key[0] for t in targets}
    named = {t.key[1] for t in targets if len(t.key) == 2}
    # 1. Group the file's weights by layer, in order of first appearance.
    by_layer: dict[tuple[str, str], dict[str, _Stored]] = {}
    for s in stored:
        kinds = by_layer.setdefault((s.scope, s.layer), {})
        if s.kind in kinds:
            problems.append(f"{s.name} is stored twice")
        kinds[s.kind] = s
    # 2. Key each file layer: by name where the source named it, else by kind and order within its scope.
    keyed: dict[tuple, dict[str, _Stored]] = {}
    unknown: list[str] = []
    counts: dict[tuple[str, str], int] = {}
    for (scope, layer), kinds in by_layer.items():
        family = _stored_family(kinds)
        if scope == "" and layer in named:
            key = ("", layer)
        elif scope in scopes and family is not None and layer not in named:
            index = counts.get((scope, family), 0)
            counts[(scope, family)] = index + 1
            key = (scope, family, index)
        else:
            unknown += [f"{s.name} {s.shape}" for s in kinds.values()]
            continue
        keyed[key] = kinds
    # 3. Pair them with ours, checking kinds and shapes.
    pairs, missing, misshaped = [], [], []
    expected_keys = set()
    for target in targets:
        expected_keys.add(target.key)
        kinds = keyed.get(target.key)
        if kinds is None:
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in target.variables.items())
            missing.append(f"{target.label}: {shapes}")
            continue
        for kind, variable in target.variables.items():
            s = kinds.get(kind)
            if s is None:
                missing.append(f"{target.label}: {kind} {tuple(variable.shape)}")
            elif s.shape != tuple(variable.shape):
                misshaped.append(
                    f"{s.name} is {s.shape}, expected {tuple(variable.shape)} for {target.label}"
                )
            else:
                pairs.append((variable, s))
        unknown += [f"{s.name} {s.shape}" for kind, s in kinds.items() if kind not in target.variables]
    for key, kinds in keyed.items():
        if key not in expected_keys:
            unknown += [f"{s.name} {s.shape}" for s in kinds.values()]
    # 4. Different numbers of auto-named layers shift the matching by order: say where.
    expected_counts: dict[tuple[str, str], int] = {}
    for target in targets:
        if len(target.key) == 3:
            expected_counts[target.key[:2]] = expected_counts.get(target.key[:2], 0) + 1
    for scope, family in sorted(set(counts) | set(expected_counts)):
        n_file, n_model = counts.get((scope, family), 0), expected_counts.get((scope, family), 0)
        if n_file != n_model:
            where = f"in {scope}" if scope else "at the top level"
            problems.append(
                f"the file has {n_file} auto-named {_KERAS2_NAME[family]} layers {where}, the model "
                f"{n_model} (they are matched in order: the file differs at or before the first mismatch)"
            )
    if unknown:
        problems.append(
            f"weights in the file that match no layer of the model ({len(unknown)}): {_listing(unknown)}"
        )
    if missing:
        problems.append(
            f"layers or variables of the model not in the file ({len(missing)}): {_listing(missing)}"
        )
    if misshaped:
        problems.append(f"weights of the wrong shape ({len(misshaped)}): {_listing(misshaped)}")
    return pairs


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise WeightsError(f"File not found. Received: path={str(path)!r}. Point to an agns-port .h5 file.")
    if not h5py.is_hdf5(path):
        raise WeightsError(
            f"{path.name} is not an HDF5 file, so not a Keras 2 model. Received: path={str(path)!r}. "
            f"Point to a file agns-port saved with model.save(...) ({', '.join(SOURCE_FILES.values())})."
        )
    return h5py.File(path, "r")


def _check_arch(arch: str | None) -> None:
    if arch is not None and arch not in BUILDERS:
        raise ValueError(
            f"Unknown architecture. Received: arch={arch!r}. Known: {', '.join(BUILDERS)} or None."
        )


def _load(f: h5py.File, path: Path, model: keras.Model | None, arch: str | None) -> keras.Model:
    """Convert the open file ``f`` into ``model`` (built from ``arch`` when None)."""
    weights = _weights_group(f, path)
    problems: list[str] = []
    layer_names, stored = _read_listing(weights, problems)
    found = _infer_arch(layer_names, stored)
    if arch is None:
        if found is None:
            logits = sorted({s.shape for s in stored if s.layer == "Logits" and s.kind == "kernel"})
            raise WeightsError(
                f"Cannot tell which network {path.name} holds. Received: top-level layers {layer_names}, "
                f"Logits kernel shapes {logits or 'none'}. Expected an agns-port VGG (VGG_Descriptor, "
                "block*_conv*, fc1, fc2) or OpenFace (First_Conv2D, Inception_*) model with 10 or 143 "
                f"classes, or the OpenFace base alone. Pass arch= ({', '.join(BUILDERS)}) if you know it."
            )
        arch = found
    if model is None:
        model = BUILDERS[arch]()
    pairs = _match(_targets(model, arch), stored, problems)
    if problems:
        hint = (
            f"The file looks like {found}: pass arch={found!r} (or arch=None to infer it)."
            if found is not None and found != arch
            else f"Point to the agns-port Keras 2 file of {arch} ({SOURCE_FILES[arch]}, saved by "
            "networks/face_nets.py), or pass arch=None to infer the architecture."
        )
        raise WeightsError(
            f"{path.name} does not fit {arch}. Received: path={str(path)!r}, arch={arch!r}. Problems: "
            + " | ".join(problems)
            + f". {hint}"
        )
    # Everything fits: assign.
    for variable, s in pairs:
        variable.assign(np.asarray(f[s.dataset]).astype(variable.dtype))
    return model


def from_keras2_h5(path: str | Path, arch: str | None = None) -> keras.Model:
    """One of agns-port's face networks with the weights of its Keras 2 ``.h5`` file.

    Args:
        path: a file agns-port wrote with ``model.save`` or ``model.save_weights`` (``vgg_10.h5``,
            ``vgg_143.h5``, ``of10.h5``, ``of143.h5``, or ``openface.h5`` holding the OpenFace base alone).
        arch: ``"vgg10"``, ``"vgg143"``, ``"openface10"``, ``"openface143"``, ``"openface_base"``, or None
            to infer it from the file's layer names and the shape of its ``Logits`` layer.

    Returns:
        The model of :mod:`advface.networks.vgg` / :mod:`advface.networks.openface` (float32 RGB in
        ``[0, 1]`` -> logits, or the 128-d embedding for ``openface_base``) holding the file's weights.

    Raises:
        WeightsError: the file is missing, not HDF5, not a Keras 2 model (e.g. a Keras 3 ``.weights.h5``),
            of another architecture, or has unknown, missing or mis-shaped weights (all named).
    """
    _check_arch(arch)
    path = Path(path)
    with _open(path) as f:
        return _load(f, path, None, arch)


def load_keras2_h5(model: keras.Model, path: str | Path, arch: str) -> keras.Model:
    """Like :func:`from_keras2_h5`, into ``model`` (built by ``BUILDERS[arch]``); returns it."""
    _check_arch(arch)
    path = Path(path)
    with _open(path) as f:
        return _load(f, path, model, arch)


def load_weights(model: keras.Model, weights: str | Path | None, arch: str) -> keras.Model:
    """A builder's ``weights=`` argument into ``model``; returns it.

    ``None`` leaves the random weights; a zoo name or a ``.weights.h5`` path loads a Keras 3 weights file;
    any other ``.h5`` file is read as the source project's Keras 2 file (:func:`load_keras2_h5`).
    """
    path = resolve_weights(weights)
    if path is None:
        return model
    if not path.name.endswith(".weights.h5"):
        return load_keras2_h5(model, path, arch)
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as exc:
        raise WeightsError(
            f"{path.name} does not hold {arch} weights ({exc}). Received: weights={str(weights)!r}. Point to "
            f"a .weights.h5 file saved from {arch}, or to the agns-port Keras 2 file ({SOURCE_FILES[arch]})."
        ) from None
    return model
