"""OpenFace nn4.small2 and the AGN classifiers OF10 / OF143 built on it, as Keras 3 models.

References: B. Amos, B. Ludwiczuk, M. Satyanarayanan, "OpenFace: A general-purpose face recognition library
with mobile applications", CMU-CS-16-118, 2016 (the nn4.small2 network); M. Sharif et al., "A General
Framework for Adversarial Examples with Objectives", ACM TOPS 2019 (the OF10 / OF143 classifiers). The
layout is that of the agns-port Keras 2 re-implementation (``networks/face_nets.py``,
``special_layers.py``; ``reference/algorithms.md`` section 1.3), so that its ``.h5`` files convert
(:mod:`advface.networks.keras2_h5`):

    input 96x96 RGB in [0, 1] -> x * 2 - 1
    -> First_Conv2D 64 7x7/2 -> BN -> ReLU -> max_pool 3x3/2 -> LRN
    -> Inception_2_Conv2D 64 1x1 -> BN -> ReLU -> conv 192 3x3 -> BN -> ReLU -> LRN -> max_pool 3x3/2
    -> Inception_3a (256) -> 3b (320, L2 pool) -> 3c (shrink, 640 @6x6) -> 4a (640, L2 pool)
    -> 4e (shrink, 1024 @3x3) -> 5a (736, L2 pool) -> 5b (736)
    -> avg_pool 3x3 -> reshape (736) -> Dense 128 -> L2 normalisation: the 128-d embedding

OF10 / OF143 add ``Fully_Connected`` Dense(12 | 286, tanh) and ``Logits`` Dense(10 | 143). Our classifiers
return the **logits**; the source appended a Softmax (``Simplex``), so ``softmax(model(x))`` is the
source's output. Attacks need the logits (the source rebuilt its models without the Softmax for them).

Differences from agns-port, on purpose:

* :class:`L2Normalization` normalises each sample; the source called ``tf.nn.l2_normalize`` without an
  axis, dividing by the norm of the whole batch tensor (bug 1.9.4), so its embeddings depended on the rest
  of the batch. Both agree for a batch of one, which is how the source's demos predicted; note that its
  OF10 / OF143 heads were *trained* on batches of 32, where the embeddings it fed them had norms around
  ``1 / sqrt(32)``.
* :class:`L2Pooling` has a finite gradient where a whole 3x3 window is zero (the source's ``sqrt`` gave
  NaN there, which is common after a ReLU).
* The model takes ``[0, 1]`` images (advface's one convention); the source fed ``x / 127.5 - 1``.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

INPUT_SIZE = 96
EMBEDDING_SIZE = 128
# Keras 2 BatchNormalization defaults, which the source used (Keras 3 has the same).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
BASE_NAME = "openface_base"
# Classes -> units of the ``Fully_Connected`` layer of the AGN classifiers.
HIDDEN_UNITS = {10: 12, 143: 286}


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv(filters: int, size: int, name: str, strides: int = 1) -> layers.Conv2D:
    return layers.Conv2D(filters, size, strides=strides, padding="same", name=name)


def _build_chain(shape, *chain) -> tuple:
    """Build ``chain`` (layers applied in sequence) on ``shape``; returns the output shape."""
    for layer in chain:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


@keras.saving.register_keras_serializable(package="advface")
class LocalResponseNormalization(layers.Layer):
    """Local response normalisation across channels, ``tf.nn.local_response_normalization`` semantics.

    ``y[..., d] = x[..., d] / (bias + alpha * sum(x[..., d - r : d + r + 1] ** 2)) ** beta`` with
    ``r = depth_radius`` and the window clipped at the first and last channel.

    The defaults are the source's (``alpha=1e-4, beta=0.75`` with TensorFlow's ``depth_radius=5,
    bias=1``). Torch OpenFace used ``SpatialCrossMapLRN(5, 1e-4, 0.75)``: a window of 5 (radius 2) and
    ``alpha / 5``, so this is not numerically the original OpenFace layer, but it is what the AGN port
    trained with.

    Args:
        depth_radius: half-width of the channel window.
        bias: the additive constant.
        alpha: the scale of the sum of squares.
        beta: the exponent.
    """

    def __init__(
        self, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs
    ):
        super().__init__(**kwargs)
        if int(depth_radius) != depth_radius or depth_radius < 0:
            raise ValueError(
                f"`depth_radius` must be an integer >= 0. Received: depth_radius={depth_radius!r}."
            )
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        r = self.depth_radius
        channels = inputs.shape[-1]
        squares = ops.square(inputs)
        padded = ops.pad(squares, [[0, 0]] * (len(inputs.shape) - 1) + [[r, r]])
        window = padded[..., 0:channels]
        for k in range(1, 2 * r + 1):
            window = window + padded[..., k : k + channels]
        return inputs / ops.power(self.bias + self.alpha * window, self.beta)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta)
        return config


@keras.saving.register_keras_serializable(package="advface")
class L2Pooling(layers.Layer):
    """OpenFace's L2 pooling: ``sqrt(pool_size**2 * average_pool(x**2))``, stride 1, ``same`` padding.

    The average is TensorFlow's (and Keras') ``same`` average pooling, which divides by the number of
    window entries inside the image, so at the borders this is not the plain Euclidean norm of the window;
    the source computed it that way and the weights were trained with it.

    The square root has an infinite derivative at 0 (a window of zeros, common after a ReLU): there the
    gradient is taken as 0, so attacks see finite gradients; the forward value is exact.

    Args:
        pool_size: the side of the square window.
    """

    def __init__(self, pool_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        if int(pool_size) != pool_size or pool_size < 1:
            raise ValueError(f"`pool_size` must be an integer >= 1. Received: pool_size={pool_size!r}.")
        self.pool_size = int(pool_size)

    def call(self, inputs):
        k = self.pool_size
        mean = ops.average_pool(ops.square(inputs), pool_size=k, strides=1, padding="same")
        energy = mean * float(k * k)
        positive = energy > 0
        # The "double where": sqrt never sees 0, so its gradient is finite where the result is masked.
        root = ops.sqrt(ops.where(positive, energy, ops.ones_like(energy)))
        return ops.where(positive, root, ops.zeros_like(energy))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size)
        return config


@keras.saving.register_keras_serializable(package="advface")
class L2Normalization(layers.Layer):
    """Each sample divided by its Euclidean norm along ``axis``: ``x / sqrt(max(sum(x**2), epsilon))``.

    ``tf.nn.l2_normalize`` semantics, but per sample: the source normalised the whole batch tensor at once
    (no ``axis``; ``reference/algorithms.md`` bug 1.9.4), which made one face's embedding depend on the
    other faces in its batch.

    Args:
        axis: the axis (or axes) of one sample's vector.
        epsilon: lower bound of the squared norm (avoids a division by zero).
    """

    def __init__(self, axis: int | list[int] = -1, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.axis = list(axis) if isinstance(axis, list | tuple) else int(axis)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        axis = tuple(self.axis) if isinstance(self.axis, list) else self.axis
        squared = ops.sum(ops.square(inputs), axis=axis, keepdims=True)
        return inputs * ops.rsqrt(ops.maximum(squared, self.epsilon))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon)
        return config


class _Branches(layers.Layer):
    """Parallel paths of layers on one input, concatenated on channels; each BatchNormalization in a path
    is followed by a ReLU. Subclasses list their paths in ``_paths()`` (in the source's creation order)."""

    def _paths(self) -> list[list[layers.Layer]]:
        raise NotImplementedError

    def build(self, input_shape):
        for path in self._paths():
            _build_chain(tuple(input_shape), *path)

    def call(self, inputs, training=None):
        outputs = []
        for path in self._paths():
            x = inputs
            for layer in path:
                if isinstance(layer, layers.BatchNormalization):
                    x = ops.relu(layer(x, training=training))
                else:
                    x = layer(x)
            outputs.append(x)
        return ops.concatenate(outputs, axis=-1)


@keras.saving.register_keras_serializable(package="advface")
class InceptionModule(_Branches):
    """The nn4.small2 inception module: 1x1 | 1x1 -> 3x3 | [1x1 -> 5x5] | pool -> 1x1, concatenated.

    Every convolution is followed by BatchNormalization and ReLU. Output channels:
    ``c1 + c3 [+ c5] + pool_proj``.

    Args:
        conv_output_sizes: ``[c3, c5]``, the filters of the 3x3 and 5x5 convolutions, or ``[c3]`` for the
            variant without the 5x5 path.
        reduce_sizes: ``[r3, r5, pool_proj, c1]`` (``[r3, pool_proj, c1]`` without the 5x5 path): the 1x1
            reductions before the 3x3 and 5x5 convolutions, the 1x1 projection after the pooling, and the
            plain 1x1 path.
        use_l2_pooling: L2 pooling (:class:`L2Pooling`) instead of max pooling in the pool path (3x3,
            stride 1).

    The sublayers are created in the source's order, :attr:`SUBLAYER_ORDER` (its attribute names and the
    order of the module's weights in a Keras 2 file).
    """

    SUBLAYER_ORDER = (
        "reduce_conv_out", "rco_bn", "reduce_3", "r3_bn", "out_3", "o3_bn",
        "reduce_5", "r5_bn", "out_5", "o5_bn", "pool", "pool_out", "po_bn",
    )  # fmt: skip

    def __init__(self, conv_output_sizes, reduce_sizes, use_l2_pooling: bool = False, **kwargs):
        super().__init__(**kwargs)
        conv_output_sizes = [int(c) for c in conv_output_sizes]
        reduce_sizes = [int(r) for r in reduce_sizes]
        if len(conv_output_sizes) not in (1, 2) or len(reduce_sizes) != len(conv_output_sizes) + 2:
            raise ValueError(
                "InceptionModule takes conv_output_sizes=[c3, c5] with reduce_sizes=[r3, r5, pool_proj, c1], "
                "or conv_output_sizes=[c3] with reduce_sizes=[r3, pool_proj, c1]. Received: "
                f"conv_output_sizes={conv_output_sizes}, reduce_sizes={reduce_sizes}."
            )
        self.conv_output_sizes = conv_output_sizes
        self.reduce_sizes = reduce_sizes
        self.use_l2_pooling = bool(use_l2_pooling)
        self.has_5x5 = len(conv_output_sizes) == 2
        shift = 0 if self.has_5x5 else 1
        # 1x1 path
        self.reduce_conv_out = _conv(reduce_sizes[3 - shift], 1, "reduce_conv_out")
        self.rco_bn = _bn("rco_bn")
        # 1x1 -> 3x3 path
        self.reduce_3 = _conv(reduce_sizes[0], 1, "reduce_3")
        self.r3_bn = _bn("r3_bn")
        self.out_3 = _conv(conv_output_sizes[0], 3, "out_3")
        self.o3_bn = _bn("o3_bn")
        # 1x1 -> 5x5 path (optional)
        if self.has_5x5:
            self.reduce_5 = _conv(reduce_sizes[1], 1, "reduce_5")
            self.r5_bn = _bn("r5_bn")
            self.out_5 = _conv(conv_output_sizes[1], 5, "out_5")
            self.o5_bn = _bn("o5_bn")
        # pool -> 1x1 path
        if self.use_l2_pooling:
            self.pool = L2Pooling(3, name="pool")
        else:
            self.pool = layers.MaxPooling2D(3, strides=1, padding="same", name="pool")
        self.pool_out = _conv(reduce_sizes[2 - shift], 1, "pool_out")
        self.po_bn = _bn("po_bn")

    def _paths(self) -> list[list[layers.Layer]]:
        paths = [[self.reduce_conv_out, self.rco_bn], [self.reduce_3, self.r3_bn, self.out_3, self.o3_bn]]
        if self.has_5x5:
            paths.append([self.reduce_5, self.r5_bn, self.out_5, self.o5_bn])
        paths.append([self.pool, self.pool_out, self.po_bn])
        return paths

    def compute_output_shape(self, input_shape):
        channels = sum(self.conv_output_sizes) + self.reduce_sizes[-1] + self.reduce_sizes[-2]
        return tuple(input_shape[:-1]) + (channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            conv_output_sizes=list(self.conv_output_sizes),
            reduce_sizes=list(self.reduce_sizes),
            use_l2_pooling=self.use_l2_pooling,
        )
        return config


@keras.saving.register_keras_serializable(package="advface")
class InceptionModuleShrink(_Branches):
    """The down-sampling inception module: 1x1 -> 3x3/2 | 1x1 -> 5x5/2 | max_pool 3x3/2, concatenated.

    Convolutions are followed by BatchNormalization and ReLU; the pool path has no projection, so the
    output has ``c3 + c5 + input channels`` channels at half the resolution (rounded up).

    Args:
        conv_output_sizes: ``[c3, c5]``, the filters of the strided 3x3 and 5x5 convolutions.
        reduce_sizes: ``[r3, r5]``, the 1x1 reductions before them.

    The sublayers are created in the source's order, :attr:`SUBLAYER_ORDER`.
    """

    SUBLAYER_ORDER = ("reduce3", "r3_bn", "conv3", "c3_bn", "reduce5", "r5_bn", "conv5", "c5_bn", "pool")

    def __init__(self, conv_output_sizes, reduce_sizes, **kwargs):
        super().__init__(**kwargs)
        conv_output_sizes = [int(c) for c in conv_output_sizes]
        reduce_sizes = [int(r) for r in reduce_sizes]
        if len(conv_output_sizes) != 2 or len(reduce_sizes) != 2:
            raise ValueError(
                "InceptionModuleShrink takes conv_output_sizes=[c3, c5] and reduce_sizes=[r3, r5]. Received: "
                f"conv_output_sizes={conv_output_sizes}, reduce_sizes={reduce_sizes}."
            )
        self.conv_output_sizes = conv_output_sizes
        self.reduce_sizes = reduce_sizes
        # 1x1 -> 3x3/2 path
        self.reduce3 = _conv(reduce_sizes[0], 1, "reduce3")
        self.r3_bn = _bn("r3_bn")
        self.conv3 = _conv(conv_output_sizes[0], 3, "conv3", strides=2)
        self.c3_bn = _bn("c3_bn")
        # 1x1 -> 5x5/2 path
        self.reduce5 = _conv(reduce_sizes[1], 1, "reduce5")
        self.r5_bn = _bn("r5_bn")
        self.conv5 = _conv(conv_output_sizes[1], 5, "conv5", strides=2)
        self.c5_bn = _bn("c5_bn")
        # pool path
        self.pool = layers.MaxPooling2D(3, strides=2, padding="same", name="pool")

    def _paths(self) -> list[list[layers.Layer]]:
        return [
            [self.reduce3, self.r3_bn, self.conv3, self.c3_bn],
            [self.reduce5, self.r5_bn, self.conv5, self.c5_bn],
            [self.pool],
        ]

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        half = lambda s: None if s is None else (s + 1) // 2  # noqa: E731
        return (n, half(h), half(w), sum(self.conv_output_sizes) + c)

    def get_config(self):
        config = super().get_config()
        config.update(conv_output_sizes=list(self.conv_output_sizes), reduce_sizes=list(self.reduce_sizes))
        return config


def _openface_layers(image):
    """nn4.small2 from the ``[0, 1]`` image tensor to the 128-d unit embedding."""
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus_one_one")(image)  # the source's [-1, 1] input
    # 1. 48x48x64
    x = _conv(64, 7, "First_Conv2D", strides=2)(x)
    x = _bn("First_BN")(x)
    x = layers.ReLU(name="First_ReLU")(x)
    # 2. 24x24x64
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="First_MaxPool")(x)
    x = LocalResponseNormalization(name="First_LRN")(x)
    # 3. 24x24x192 -> 12x12x192
    x = _conv(64, 1, "Inception_2_Conv2D")(x)
    x = _bn("Inception_2_BN")(x)
    x = layers.ReLU(name="Inception_2_ReLU")(x)
    x = _conv(192, 3, "Inception_2_Conv2D_3x3")(x)
    x = _bn("Inception_2_BN_3x3")(x)
    x = layers.ReLU(name="Inception_2_ReLU_3x3")(x)
    x = LocalResponseNormalization(name="Inception_2_LRN")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="Inception_2_MaxPool")(x)
    # 4.-10. the inception modules (argument semantics as in the source)
    x = InceptionModule([128, 32], [96, 16, 32, 64], name="Inception_3a")(x)  # 12x12x256
    x = InceptionModule([128, 64], [96, 32, 64, 64], use_l2_pooling=True, name="Inception_3b")(x)  # 320
    x = InceptionModuleShrink([256, 64], [128, 32], name="Inception_3c")(x)  # 6x6x640
    x = InceptionModule([192, 64], [96, 32, 128, 256], use_l2_pooling=True, name="Inception_4a")(x)  # 640
    x = InceptionModuleShrink([256, 128], [160, 64], name="Inception_4e")(x)  # 3x3x1024
    x = InceptionModule([384], [96, 96, 256], use_l2_pooling=True, name="Inception_5a")(x)  # 736
    x = InceptionModule([384], [96, 96, 256], name="Inception_5b")(x)  # 3x3x736
    # 11. 736 -> 128, unit length
    x = layers.AveragePooling2D(3, name="AvgPool")(x)
    x = layers.Flatten(name="reshape")(x)
    x = layers.Dense(EMBEDDING_SIZE, name="Embedding_Dense")(x)
    return L2Normalization(name="Embedding")(x)


def build_openface_base(name: str = BASE_NAME) -> keras.Model:
    """nn4.small2 with fresh (random) weights; :func:`openface_base` loads weights."""
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    return keras.Model(image, _openface_layers(image), name=name)


def build_openface_classifier(classes: int) -> keras.Model:
    """OF10 or OF143 with fresh (random) weights: nn4.small2 -> Dense(tanh) -> logits."""
    if classes not in HIDDEN_UNITS:
        raise ValueError(
            f"The AGN OpenFace classifiers have 10 or 143 classes. Received: classes={classes!r}."
        )
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = _openface_layers(image)
    x = layers.Dense(HIDDEN_UNITS[classes], activation="tanh", name="Fully_Connected")(x)
    logits = layers.Dense(classes, name="Logits")(x)
    return keras.Model(image, logits, name=f"openface{classes}")


def _with_weights(model: keras.Model, weights: str | Path | None, arch: str) -> keras.Model:
    from advface.networks.keras2_h5 import load_weights

    return load_weights(model, weights, arch)


def openface_base(weights: str | Path | None = None) -> keras.Model:
    """OpenFace nn4.small2 (agns-port layout): aligned 96x96 RGB in ``[0, 1]`` -> 128-d unit embedding.

    Args:
        weights: ``None`` (random), a zoo name (``"openface"``), a ``.weights.h5`` file saved from this
            model, or the source project's Keras 2 ``.h5`` file of the base (``openface.h5``).

    Returns:
        A ``keras.Model`` mapping ``(N, 96, 96, 3)`` float32 in ``[0, 1]`` to ``(N, 128)`` unit vectors.
    """
    return _with_weights(build_openface_base(), weights, "openface_base")


def openface10(weights: str | Path | None = None) -> keras.Model:
    """The AGN OF10 classifier: aligned 96x96 RGB in ``[0, 1]`` -> 10 logits (softmax: the source's output).

    Args:
        weights: ``None`` (random), a zoo name (``"openface10"``), a ``.weights.h5`` file saved from this
            model, or the source project's Keras 2 ``of10.h5``.
    """
    return _with_weights(build_openface_classifier(10), weights, "openface10")


def openface143(weights: str | Path | None = None) -> keras.Model:
    """The AGN OF143 classifier: aligned 96x96 RGB in ``[0, 1]`` -> 143 logits (see :func:`openface10`)."""
    return _with_weights(build_openface_classifier(143), weights, "openface143")
