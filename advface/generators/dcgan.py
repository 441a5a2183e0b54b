"""``digiface-dcgan``: the offline default face generator (z in R^100 -> 64x64 RGB).

A DCGAN trained on DigiFace-1M, a data set of 1.2 million rendered synthetic faces (Bae et al., "DigiFace-
1M: 1 Million Digital Face Images for Face Recognition", WACV 2023), shipped in the ``gan-face-generate``
1.1.1 wheel (package MIT; DigiFace-1M's licence restricts the data to non-commercial research). It has no
mapping network, so its latent space is z itself and there is no truncation.
"""

from __future__ import annotations

import tensorflow as tf

from advface.generators.base import LatentGenerator


class DCGANGenerator(LatentGenerator):
    """A DCGAN with a tanh output as a :class:`LatentGenerator` (images mapped from [-1, 1] to [0, 1]).

    Args:
        model: Keras model z ``(N, latent_size)`` -> ``(N, R, R, 3)`` in ``[-1, 1]``, run in inference mode
            (fixed batch-norm statistics, so an image does not depend on the rest of its batch).
        name: registry name.
    """

    latent_space = "z"

    def __init__(self, model, *, name: str):
        self.model = model
        self.name = name
        self.latent_size = int(model.input_shape[-1])
        self.resolution = int(model.output_shape[1])
        self._render = tf.function(lambda z: self.model(z, training=False), reduce_retracing=True)

    def synthesize(self, latents) -> tf.Tensor:
        z = tf.convert_to_tensor(latents, tf.float32)
        out = self._render(z)
        return tf.clip_by_value((out + 1.0) * 0.5, 0.0, 1.0)


def digiface_dcgan() -> DCGANGenerator:
    """The ``digiface-dcgan`` generator, weights read from the installed gan-face-generate wheel."""
    from advface.networks.digiface_dcgan import digiface_generator

    return DCGANGenerator(digiface_generator(weights="digiface-dcgan"), name="digiface-dcgan")


def digiface_available() -> bool:
    from advface.assets import package_file_available

    return package_file_available("gan-face-generate", "weights.tar")
