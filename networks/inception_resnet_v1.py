"""FaceNet's Inception-ResNet-v1 as in facenet-pytorch, as a Keras 3 model, with a strict converter.

References: F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet: A Unified Embedding for Face Recognition and
Clustering", CVPR 2015; C. Szegedy, S. Ioffe, V. Vanhoucke, A. Alemi, "Inception-v4, Inception-ResNet and
the Impact of Residual Connections on Learning", AAAI 2017. The layout and tensor names are Tim Esler's
facenet-pytorch (``models/inception_resnet_v1.py``), itself a port of David Sandberg's TensorFlow FaceNet
(VGGFace2 and CASIA-WebFace weights):

    input 160x160 RGB, (pixel - 127.5) / 128
    -> stem: conv2d_1a 3x3/2 (32), conv2d_2a 3x3 (32), conv2d_2b 3x3 pad 1 (64), maxpool_3a 3x3/2,
       conv2d_3b 1x1 (80), conv2d_4a 3x3 (192), conv2d_4b 3x3/2 (256)
    -> repeat_1: 5 x Block35 (scale 0.17) -> mixed_6a (896)
    -> repeat_2: 10 x Block17 (scale 0.10) -> mixed_7a (1792)
    -> repeat_3: 5 x Block8 (scale 0.20) -> block8 (scale 1, no ReLU)
    -> global average -> dropout 0.6 -> last_linear 1792->512 (no bias) -> last_bn -> L2 normalise

Every ``BasicConv2d`` is conv (no bias) -> batch norm (eps 0.001) -> ReLU; each residual block is
``relu(x + scale * conv1x1(concat(branches)))``. Unpadded convolutions and pools are Keras ``"valid"``,
padded ones are stride 1 with odd kernels, i.e. Keras ``"same"`` (symmetric, exact).

Our model takes float32 RGB ``(N, 160, 160, 3)`` in ``[0, 1]`` (an MTCNN face crop) and returns the
L2-normalised 512-d embedding; facenet-pytorch's ``fixed_image_standardization`` is a layer inside. Every
Keras layer is named after its PyTorch module (``repeat_1.0.branch1.1.conv``), so the conversion table
maps ``<module>.<tensor>`` to ``<layer>/<variable>``. The dropout layer is inert at inference.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from advface.errors import WeightsError
from advface.networks.torch_convert import assign_state, torch_table
from advface.networks.torch_pickle import read_state_dict
from advface.savedmodels import resolve_weights

INPUT_SIZE = 160
EMBEDDING_SIZE = 512
BN_EPSILON = 1e-3
DROPOUT = 0.6
# Residual scales of facenet-pytorch's repeat_1 (Block35), repeat_2 (Block17) and repeat_3 (Block8).
SCALES = {"block35": 0.17, "block17": 0.10, "block8": 0.20}
# The training classifier in facenet-pytorch's files (8631 VGGFace2 or 10575 CASIA-WebFace identities); the
# embedding does not use it.
CLASSIFIER_TENSORS = ("logits.weight", "logits.bias")


def _basic_conv(x, filters: int, kernel, name: str, stride: int = 1, padding: str = "valid"):
    """facenet-pytorch ``BasicConv2d``: ``<name>.conv`` (no bias) -> ``<name>.bn`` -> ReLU."""
    conv = layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{name}.conv"
    )
    x = conv(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"{name}.bn")(x)
    return layers.ReLU(name=f"{name}.relu")(x)


def _residual(x, branches: list, scale: float, name: str, activate: bool = True):
    """``relu(x + scale * <name>.conv2d(concat(branches)))``; ``activate=False`` drops the ReLU."""
    mixed = layers.Concatenate(name=f"{name}.cat")(branches)
    up = layers.Conv2D(x.shape[-1], 1, name=f"{name}.conv2d")(mixed)
    up = layers.Rescaling(scale, name=f"{name}.scale")(up)
    out = layers.Add(name=f"{name}.add")([up, x])
    return layers.ReLU(name=f"{name}.relu")(out) if activate else out


def _block35(x, name: str):
    b0 = _basic_conv(x, 32, 1, f"{name}.branch0")
    b1 = _basic_conv(x, 32, 1, f"{name}.branch1.0")
    b1 = _basic_conv(b1, 32, 3, f"{name}.branch1.1", padding="same")
    b2 = _basic_conv(x, 32, 1, f"{name}.branch2.0")
    b2 = _basic_conv(b2, 32, 3, f"{name}.branch2.1", padding="same")
    b2 = _basic_conv(b2, 32, 3, f"{name}.branch2.2", padding="same")
    return _residual(x, [b0, b1, b2], SCALES["block35"], name)


def _block17(x, name: str):
    b0 = _basic_conv(x, 128, 1, f"{name}.branch0")
    b1 = _basic_conv(x, 128, 1, f"{name}.branch1.0")
    b1 = _basic_conv(b1, 128, (1, 7), f"{name}.branch1.1", padding="same")
    b1 = _basic_conv(b1, 128, (7, 1), f"{name}.branch1.2", padding="same")
    return _residual(x, [b0, b1], SCALES["block17"], name)


def _block8(x, name: str, scale: float = SCALES["block8"], activate: bool = True):
    b0 = _basic_conv(x, 192, 1, f"{name}.branch0")
    b1 = _basic_conv(x, 192, 1, f"{name}.branch1.0")
    b1 = _basic_conv(b1, 192, (1, 3), f"{name}.branch1.1", padding="same")
    b1 = _basic_conv(b1, 192, (3, 1), f"{name}.branch1.2", padding="same")
    return _residual(x, [b0, b1], scale, name, activate=activate)


def _mixed_6a(x):
    b0 = _basic_conv(x, 384, 3, "mixed_6a.branch0", stride=2)
    b1 = _basic_conv(x, 192, 1, "mixed_6a.branch1.0")
    b1 = _basic_conv(b1, 192, 3, "mixed_6a.branch1.1", padding="same")
    b1 = _basic_conv(b1, 256, 3, "mixed_6a.branch1.2", stride=2)
    b2 = layers.MaxPooling2D(3, strides=2, name="mixed_6a.branch2")(x)
    return layers.Concatenate(name="mixed_6a.cat")([b0, b1, b2])


def _mixed_7a(x):
    b0 = _basic_conv(x, 256, 1, "mixed_7a.branch0.0")
    b0 = _basic_conv(b0, 384, 3, "mixed_7a.branch0.1", stride=2)
    b1 = _basic_conv(x, 256, 1, "mixed_7a.branch1.0")
    b1 = _basic_conv(b1, 256, 3, "mixed_7a.branch1.1", stride=2)
    b2 = _basic_conv(x, 256, 1, "mixed_7a.branch2.0")
    b2 = _basic_conv(b2, 256, 3, "mixed_7a.branch2.1", padding="same")
    b2 = _basic_conv(b2, 256, 3, "mixed_7a.branch2.2", stride=2)
    b3 = layers.MaxPooling2D(3, strides=2, name="mixed_7a.branch3")(x)
    return layers.Concatenate(name="mixed_7a.cat")([b0, b1, b2, b3])


def build_inception_resnet_v1(name: str = "inception_resnet_v1") -> keras.Model:
    """The architecture with fresh (random) weights; :func:`inception_resnet_v1` loads trained ones."""
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    # fixed_image_standardization: (pixel - 127.5) / 128 with pixels in 0..255, i.e. x * 255/128 - 127.5/128.
    x = layers.Rescaling(255 / 128, offset=-127.5 / 128, name="normalisation")(image)
    x = _basic_conv(x, 32, 3, "conv2d_1a", stride=2)
    x = _basic_conv(x, 32, 3, "conv2d_2a")
    x = _basic_conv(x, 64, 3, "conv2d_2b", padding="same")
    x = layers.MaxPooling2D(3, strides=2, name="maxpool_3a")(x)
    x = _basic_conv(x, 80, 1, "conv2d_3b")
    x = _basic_conv(x, 192, 3, "conv2d_4a")
    x = _basic_conv(x, 256, 3, "conv2d_4b", stride=2)
    for i in range(5):
        x = _block35(x, f"repeat_1.{i}")
    x = _mixed_6a(x)
    for i in range(10):
        x = _block17(x, f"repeat_2.{i}")
    x = _mixed_7a(x)
    for i in range(5):
        x = _block8(x, f"repeat_3.{i}")
    x = _block8(x, "block8", scale=1.0, activate=False)
    x = layers.GlobalAveragePooling2D(name="avgpool_1a")(x)
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    x = layers.Dense(EMBEDDING_SIZE, use_bias=False, name="last_linear")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name="last_bn")(x)
    x = layers.UnitNormalization(axis=-1, name="l2_normalise")(x)
    return keras.Model(image, x, name=name)


# ---------------------------------------------------------------------------------------------------------
# Conversion from a facenet-pytorch state dict.


def convert_facenet(state: dict[str, np.ndarray], model: keras.Model) -> None:
    """Assign a facenet-pytorch ``InceptionResnetV1`` state dict to ``model``.

    The table comes from the model's torch-named layers (:func:`advface.networks.torch_convert.torch_table`).
    Every tensor of ``state`` must match an entry and every entry must be present with the right shape;
    only ``*.num_batches_tracked`` and the training classifier :data:`CLASSIFIER_TENSORS` (``logits.weight``
    / ``logits.bias``, which the embedding does not use) are ignored. Nothing is assigned unless the whole
    state dict fits.

    Args:
        state: ``{torch name: array}``, e.g. from :func:`advface.networks.torch_pickle.read_state_dict`.
        model: the Keras model.

    Raises:
        WeightsError: unknown, missing or mis-shaped tensors (named in the message).
    """
    table, ignored = torch_table(model)
    assign_state(
        state,
        model,
        table,
        ignored | set(CLASSIFIER_TENSORS),
        what="facenet-pytorch's InceptionResnetV1",
        advice="Point to the weights of facenet_pytorch.InceptionResnetV1 (20180402-114759-vggface2.pt or "
        "20180408-102900-casia-webface.pt), saved with torch.save(model.state_dict(), path).",
    )


def from_facenet_pytorch(path: str | Path) -> keras.Model:
    """An Inception-ResNet-v1 with the weights of a facenet-pytorch file, read without running its pickle.

    Args:
        path: a ``torch.save`` state dict of ``facenet_pytorch.InceptionResnetV1`` (zip or legacy format;
            the ``logits.*`` classifier may be present and is ignored).

    Returns:
        The model of :func:`inception_resnet_v1` with the file's weights.

    Raises:
        WeightsError: the file is not such a state dict.
    """
    state = read_state_dict(Path(path))
    model = build_inception_resnet_v1()
    convert_facenet(state, model)
    return model


def inception_resnet_v1(weights: str | Path | None = None) -> keras.Model:
    """FaceNet Inception-ResNet-v1: a 160x160 RGB face crop in ``[0, 1]`` -> L2-normalised 512-d embedding.

    Args:
        weights: ``None`` (random), a path to a ``.weights.h5`` file saved from this model, or a zoo name.
            Convert facenet-pytorch files with :func:`from_facenet_pytorch`.

    Returns:
        A ``keras.Model`` mapping float32 ``(N, 160, 160, 3)`` in ``[0, 1]`` to ``(N, 512)`` unit vectors.
    """
    path = resolve_weights(weights)
    if path is not None and not path.name.endswith(".weights.h5"):
        raise WeightsError(
            "inception_resnet_v1(weights=...) loads Keras .weights.h5 files or zoo names. Received: "
            f"weights={str(weights)!r}. Convert a facenet-pytorch file with from_facenet_pytorch(path) first."
        )
    model = build_inception_resnet_v1()
    if path is not None:
        model.load_weights(path)
    return model
