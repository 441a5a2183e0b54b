"""The AGN eyeglass DCGAN (Sharif et al., "A General Framework for Adversarial Examples with Objectives",
TOPS 2019): a generator of 64x176 eyeglass-frame canvases from z in R^25 and its discriminator with
minibatch discrimination (Salimans et al. 2016).

Both follow advface's image convention: the generator ends with ``tanh`` (the DCGAN's [-1, 1]) mapped to
``[0, 1]``, and the discriminator maps its ``[0, 1]`` input back to [-1, 1] first. The discriminator
returns a **logit** (the source port squashed it with a sigmoid and then applied a from-logits loss:
reference/algorithms.md 1.4); use ``keras.ops.sigmoid`` for a probability.

=================  =========================================================================  ==========
network            layers                                                                     parameters
=================  =========================================================================  ==========
generator          Dense 7040, BN, ReLU, reshape 4x11x160; ConvT 80, 40, 20 (5x5, stride 2),    633,403
                   each BN, ReLU; ConvT 3 (5x5, stride 2), tanh -> 64x176x3
discriminator      Conv 20, 40, 80, 160 (5x5, stride 2; BN after all but the first),          3,809,801
                   LeakyReLU 0.2; flatten 7040; minibatch discrimination (160 kernels of 3);
                   Dense 1 on 7040 + 160 features
=================  =========================================================================  ==========

Parameter counts are Keras' ``count_params()``, which includes batch-norm moving statistics (as the
source's README figures do).
"""

from __future__ import annotations

import keras
from keras import layers, ops

LATENT_DIM = 25
CANVAS_SHAPE = (64, 176, 3)


@keras.saving.register_keras_serializable(package="advface")
class MinibatchDiscrimination(layers.Layer):
    """Minibatch discrimination: lets the discriminator see how alike the samples of a batch are.

    ``a = x W + b`` reshaped to ``(B, kernels, dim)``; ``M_ijk = sum_d |a_ikd - a_jkd|``;
    output ``concat([x, sum_j exp(-M_ijk)])`` of width ``features + kernels`` (j runs over the whole
    batch, i itself included, as in the AGN source).

    Args:
        kernels: number of similarity kernels (160 in AGN).
        kernel_dim: dimension of each kernel's projection (3 in AGN).
    """

    def __init__(self, kernels: int = 160, kernel_dim: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.kernels = kernels
        self.kernel_dim = kernel_dim

    def build(self, input_shape):
        features = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(features, self.kernels * self.kernel_dim), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.kernels * self.kernel_dim,), initializer="zeros")

    def call(self, x):
        a = ops.reshape(ops.matmul(x, self.kernel) + self.bias, (-1, self.kernels, self.kernel_dim))
        l1 = ops.sum(ops.abs(a[:, None] - a[None, :]), axis=-1)  # (B, B, kernels)
        return ops.concatenate([x, ops.sum(ops.exp(-l1), axis=1)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.kernels)

    def get_config(self):
        return {**super().get_config(), "kernels": self.kernels, "kernel_dim": self.kernel_dim}


def eyeglass_generator(*, weights=None, name: str = "eyeglass_generator") -> keras.Model:
    """The AGN generator: ``(N, 25)`` latents -> ``(N, 64, 176, 3)`` float32 canvases in ``[0, 1]``.

    Args:
        weights: None (DCGAN initialisation), a ``.weights.h5`` path, or a saved-models name.
    """
    init = keras.initializers.RandomNormal(stddev=0.02)
    z = keras.Input((LATENT_DIM,), name="z")
    x = layers.Dense(4 * 11 * 160, kernel_initializer=init, name="project")(z)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((4, 11, 160))(x)
    for i, filters in enumerate((80, 40, 20), start=1):
        x = layers.Conv2DTranspose(
            filters, 5, strides=2, padding="same", kernel_initializer=init, name=f"deconv{i}"
        )(x)
        x = layers.BatchNormalization(name=f"deconv{i}_bn")(x)
        x = layers.ReLU()(x)
    x = layers.Conv2DTranspose(
        3, 5, strides=2, padding="same", activation="tanh", kernel_initializer=init, name="deconv4"
    )(x)
    out = layers.Rescaling(0.5, offset=0.5, name="to_unit")(x)  # [-1, 1] -> [0, 1]
    model = keras.Model(z, out, name=name)
    return _load(model, weights)


def eyeglass_discriminator(*, weights=None, name: str = "eyeglass_discriminator") -> keras.Model:
    """The AGN discriminator: ``(N, 64, 176, 3)`` canvases in ``[0, 1]`` -> ``(N, 1)`` logits (real > 0).

    Minibatch discrimination makes a sample's logit depend on the rest of its batch; judge real and
    generated samples in separate batches of the training batch size.
    """
    init = keras.initializers.RandomNormal(stddev=0.02)
    image = keras.Input(CANVAS_SHAPE, name="glasses")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_symmetric")(image)  # [0, 1] -> [-1, 1]
    for i, filters in enumerate((20, 40, 80, 160), start=1):
        x = layers.Conv2D(filters, 5, strides=2, padding="same", kernel_initializer=init, name=f"conv{i}")(x)
        if i > 1:
            x = layers.BatchNormalization(name=f"conv{i}_bn")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)  # 4 x 11 x 160 = 7040
    x = MinibatchDiscrimination(160, 3, name="minibatch")(x)
    out = layers.Dense(1, kernel_initializer=init, name="logit")(x)
    model = keras.Model(image, out, name=name)
    return _load(model, weights)


def _load(model: keras.Model, weights) -> keras.Model:
    if weights is not None:
        from advface.errors import WeightsError
        from advface.savedmodels import resolve_weights

        path = resolve_weights(weights)
        try:
            model.load_weights(path)
        except (ValueError, OSError) as exc:
            raise WeightsError(
                f"{path} does not hold {model.name} weights ({str(exc).splitlines()[0][:100]}). Pass the "
                "file `advface glasses train` stored for this network."
            ) from None
    return model
