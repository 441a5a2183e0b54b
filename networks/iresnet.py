"""insightface's ArcFace IResNet backbones (iresnet18/34/50/100) as Keras 3 models, with a strict converter.

Reference: J. Deng, J. Guo, N. Xue, S. Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
Recognition", CVPR 2019. The architecture is insightface's ``arcface_torch`` ``backbones/iresnet.py``
(PyTorch, NCHW):

    input 112x112 RGB, (pixel / 255 - 0.5) / 0.5
    -> conv1 3x3/1 (64, no bias) -> bn1 -> prelu
    -> layer1..layer4 (64, 128, 256, 512 planes; the first block of each has stride 2 and a downsample
       branch conv 1x1/2 -> bn)
    -> bn2 -> flatten (NCHW order, 512*7*7) -> fc 25088->512 (bias) -> features (BatchNorm1d)

with the "improved" basic block ``bn1 -> conv1 3x3/1 -> bn2 -> prelu -> conv2 3x3/s -> bn3`` plus the
identity (or downsample) shortcut, and no activation after the sum. All batch norms use eps 1e-5.

Our model takes float32 RGB ``(N, 112, 112, 3)`` in ``[0, 1]`` (an insightface face chip) and returns the
raw 512-d feature (not L2-normalised; ArcFace compares features by cosine). The input normalisation is
``x * 2 - 1``, a layer inside the model. Every Keras layer is named after its PyTorch module
(``layer1.0.conv1``), so the conversion table maps ``<module>.<tensor>`` to ``<layer>/<variable>``.

Two details keep the port exact: torch pads a 3x3 stride-2 convolution by one pixel on every side, while
Keras ``"same"`` pads only bottom/right at stride 2, so those convolutions get an explicit
``ZeroPadding2D(1)`` and ``"valid"`` padding (stride-1 ``"same"`` is already symmetric); and torch flattens
the final ``(512, 7, 7)`` map channel-first, which the converter folds into the ``fc`` kernel instead of
adding a transpose to the model.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
from keras import layers

from advface.errors import WeightsError
from advface.networks.torch_convert import assign_state, torch_table
from advface.networks.torch_pickle import read_state_dict
from advface.savedmodels import resolve_weights

INPUT_SIZE = 112
EMBEDDING_SIZE = 512
# Blocks per stage (layer1..layer4) of each depth, as in arcface_torch's iresnet18 ... iresnet100.
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
PLANES = (64, 128, 256, 512)
BN_EPSILON = 1e-5
# Spatial size of the last feature map: 112 halved by each of the four stages.
FEATURE_MAP_SIZE = INPUT_SIZE // 16


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=name)


def _conv3x3(x, filters: int, stride: int, name: str):
    """torch ``Conv2d(k=3, padding=1, stride, bias=False)``: symmetric padding at every stride."""
    if stride == 1:
        return layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    x = layers.ZeroPadding2D(1, name=f"{name}.pad")(x)
    return layers.Conv2D(filters, 3, strides=stride, padding="valid", use_bias=False, name=name)(x)


def _block(x, planes: int, stride: int, name: str):
    """arcface_torch ``IBasicBlock``: bn1, conv1, bn2, prelu, conv2 (stride), bn3, plus the shortcut."""
    shortcut = x
    out = _bn(f"{name}.bn1")(x)
    out = _conv3x3(out, planes, 1, f"{name}.conv1")
    out = _bn(f"{name}.bn2")(out)
    out = layers.PReLU(shared_axes=[1, 2], name=f"{name}.prelu")(out)
    out = _conv3x3(out, planes, stride, f"{name}.conv2")
    out = _bn(f"{name}.bn3")(out)
    if stride != 1 or x.shape[-1] != planes:
        shortcut = layers.Conv2D(planes, 1, strides=stride, use_bias=False, name=f"{name}.downsample.0")(x)
        shortcut = _bn(f"{name}.downsample.1")(shortcut)
    return layers.Add(name=f"{name}.add")([out, shortcut])


def build_iresnet(depth: int) -> keras.Model:
    """The IResNet architecture of ``depth`` with fresh (random) weights.

    Args:
        depth: 18, 34, 50 or 100.

    Returns:
        A ``keras.Model`` named ``iresnet<depth>`` mapping float32 ``(N, 112, 112, 3)`` in ``[0, 1]`` to
        ``(N, 512)`` raw features.
    """
    if depth not in BLOCKS:
        raise ValueError(f"IResNet depth must be one of {sorted(BLOCKS)}. Received: depth={depth!r}.")
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    # insightface feeds (pixel / 255 - 0.5) / 0.5; on [0, 1] input that is x * 2 - 1.
    x = layers.Rescaling(2.0, offset=-1.0, name="normalisation")(image)
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="conv1")(x)
    x = _bn("bn1")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    for stage, (planes, blocks) in enumerate(zip(PLANES, BLOCKS[depth], strict=True), start=1):
        for i in range(blocks):
            x = _block(x, planes, 2 if i == 0 else 1, f"layer{stage}.{i}")
    x = _bn("bn2")(x)
    # Flattened NHWC here; the converter permutes torch's NCHW-ordered fc kernel to match.
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(EMBEDDING_SIZE, name="fc")(x)
    x = _bn("features")(x)
    return keras.Model(image, x, name=f"iresnet{depth}")


# ---------------------------------------------------------------------------------------------------------
# Conversion from an arcface_torch state dict.


def _fc_kernel(w: np.ndarray) -> np.ndarray:
    # torch's column c*49 + h*7 + w (NCHW flatten) becomes our row h*7*512 + w*512 + c (NHWC flatten).
    size = FEATURE_MAP_SIZE
    out_features, in_features = w.shape
    channels = in_features // (size * size)
    return w.reshape(out_features, channels, size, size).transpose(2, 3, 1, 0).reshape(in_features, -1)


def convert_insightface(state: dict[str, np.ndarray], model: keras.Model) -> None:
    """Assign an arcface_torch IResNet state dict to ``model`` (built by :func:`build_iresnet`).

    The table comes from the model's torch-named layers (:func:`advface.networks.torch_convert.torch_table`),
    with the ``fc`` kernel permuted from torch's NCHW flatten to our NHWC one. Every tensor of ``state``
    must match an entry and every entry must be present with the right shape; only
    ``*.num_batches_tracked`` is ignored. Nothing is assigned unless the whole state dict fits.

    Args:
        state: ``{torch name: array}``, e.g. from :func:`advface.networks.torch_pickle.read_state_dict`.
        model: the Keras model of the same depth.

    Raises:
        WeightsError: unknown, missing or mis-shaped tensors (named in the message).
    """
    table, ignored = torch_table(model)
    table["fc.weight"] = replace(table["fc.weight"], transform=_fc_kernel)
    assign_state(
        state,
        model,
        table,
        ignored,
        what=f"an insightface {model.name} backbone",
        advice="Check the depth and that the file is the backbone (backbone.pth), not a training checkpoint "
        "of another network.",
    )


def _depth_of(state: dict[str, np.ndarray], path: Path) -> int:
    """The depth whose blocks per stage match the ``layerK.I.`` keys of ``state``."""
    blocks = []
    for stage in range(1, 5):
        indices = {int(m[1]) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(max(indices) + 1 if indices else 0)
    for depth, expected in BLOCKS.items():
        if tuple(blocks) == expected:
            return depth
    raise WeightsError(
        f"{path.name} is not an insightface IResNet backbone of a supported depth: its stages have "
        f"{tuple(blocks)} blocks. Supported: "
        + ", ".join(f"iresnet{d} {b}" for d, b in BLOCKS.items())
        + ". Point to arcface_torch's backbone.pth of one of these."
    )


def from_insightface(path: str | Path, depth: int | None = None) -> keras.Model:
    """An IResNet with the weights of an arcface_torch ``backbone.pth``, read without running its pickle.

    Args:
        path: a ``torch.save`` state dict of ``iresnet18/34/50/100`` (zip or legacy format).
        depth: the expected depth, or ``None`` to infer it from the blocks in the file.

    Returns:
        The model of :func:`build_iresnet` with the file's weights.

    Raises:
        WeightsError: the file is not such a backbone, or its depth differs from ``depth``.
    """
    if depth is not None and depth not in BLOCKS:
        raise ValueError(f"IResNet depth must be one of {sorted(BLOCKS)}. Received: depth={depth!r}.")
    path = Path(path)
    state = read_state_dict(path)
    found = _depth_of(state, path)
    if depth is not None and found != depth:
        raise WeightsError(
            f"{path.name} holds an iresnet{found} backbone, not iresnet{depth}. Received: depth={depth}. "
            f"Pass depth={found} (or depth=None to infer it), or point to an iresnet{depth} file."
        )
    model = build_iresnet(found)
    convert_insightface(state, model)
    return model


def _iresnet(depth: int, weights: str | Path | None) -> keras.Model:
    path = resolve_weights(weights)
    if path is not None and not path.name.endswith(".weights.h5"):
        raise WeightsError(
            f"iresnet{depth}(weights=...) loads Keras .weights.h5 files or zoo names. Received: "
            f"weights={str(weights)!r}. Convert a PyTorch backbone with from_insightface(path) first."
        )
    model = build_iresnet(depth)
    if path is not None:
        model.load_weights(path)
    return model


def iresnet18(weights: str | Path | None = None) -> keras.Model:
    """ArcFace IResNet-18: aligned 112x112 RGB in ``[0, 1]`` -> 512-d feature.

    Args:
        weights: ``None`` (random), a path to a ``.weights.h5`` file saved from this model, or a zoo name.
    """
    return _iresnet(18, weights)


def iresnet34(weights: str | Path | None = None) -> keras.Model:
    """ArcFace IResNet-34: aligned 112x112 RGB in ``[0, 1]`` -> 512-d feature (see :func:`iresnet18`)."""
    return _iresnet(34, weights)


def iresnet50(weights: str | Path | None = None) -> keras.Model:
    """ArcFace IResNet-50: aligned 112x112 RGB in ``[0, 1]`` -> 512-d feature (see :func:`iresnet18`)."""
    return _iresnet(50, weights)


def iresnet100(weights: str | Path | None = None) -> keras.Model:
    """ArcFace IResNet-100: aligned 112x112 RGB in ``[0, 1]`` -> 512-d feature (see :func:`iresnet18`)."""
    return _iresnet(100, weights)
