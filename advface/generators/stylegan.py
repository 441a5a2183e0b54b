"""StyleGAN (v1) behind the :class:`~advface.generators.base.LatentGenerator` interface.

Latents are ``w`` (the mapping network's output); :meth:`StyleGANGenerator.synthesize` applies the
truncation trick, renders with the network's fixed noise buffers (deterministic, differentiable with
respect to ``w``) and maps the raw ``[-1, 1]`` output to advface's ``[0, 1]`` images. The network itself is
:mod:`advface.networks.stylegan`; ``advface zoo convert stylegan-ffhq FILE`` makes the FFHQ weights.
"""

from __future__ import annotations

import tensorflow as tf

from advface import savedmodels
from advface.errors import AdvfaceError, WeightsError
from advface.generators.base import LatentGenerator, Truncation
from advface.networks.stylegan import StyleGAN, StyleGANConfig, stylegan, stylegan_config

FFHQ_NAME = "stylegan-ffhq"


class StyleGANGenerator(LatentGenerator):
    """A :class:`~advface.networks.stylegan.StyleGAN` as a ``w``-space face generator.

    Attributes:
        model: the Keras network.
        latent_size: ``dlatent_size`` (512 for FFHQ), the length of ``w``.
        z_size: the mapping network's input size.
        truncation: ``Truncation(psi, cutoff)`` from the network's config, applied by :meth:`synthesize`.

    Args:
        model: the network (with its weights).
        name: registry name.
    """

    latent_space = "w"

    def __init__(self, model: StyleGAN, *, name: str = "stylegan"):
        if not isinstance(model, StyleGAN):
            raise AdvfaceError(
                f"StyleGANGenerator wraps a StyleGAN model. Received: model={type(model).__name__}."
            )
        config = model.config
        self.model = model
        self.name = name
        self.latent_size = config.dlatent_size
        self.resolution = config.resolution
        self.truncation = Truncation(psi=config.truncation_psi, cutoff=config.truncation_cutoff)
        self._z_size = config.latent_size

    @property
    def z_size(self) -> int:
        return self._z_size

    @property
    def num_layers(self) -> int:
        """Number of style layers L of a w+ latent ``(N, L, latent_size)``."""
        return self.model.config.num_layers

    def map(self, z) -> tf.Tensor:
        """z ``(N, z_size)`` float32 -> w ``(N, latent_size)`` through the mapping network."""
        z = tf.convert_to_tensor(z, tf.float32)
        if z.shape.rank != 2 or z.shape[1] != self.z_size:
            raise AdvfaceError(
                f"{self.name} maps z of shape (N, {self.z_size}). Received: z.shape={tuple(z.shape)}. Draw z "
                "with generator.sample_z(n, seed)."
            )
        return self.model.map(z)

    def synthesize(self, latents) -> tf.Tensor:
        """Render w: images float32 ``(N, R, R, 3)`` in ``[0, 1]``, ``clip((x + 1) / 2, 0, 1)``.

        The truncation trick (:attr:`truncation`) is applied first, then the network renders with its
        fixed noise, so the same latents always give the same images. Differentiable with respect to
        ``latents`` (a clipped pixel has zero gradient).

        Args:
            latents: w ``(N, latent_size)``, or per-layer w+ ``(N, num_layers, latent_size)`` (the
                truncation then applies to each layer's own w).
        """
        w = tf.convert_to_tensor(latents, tf.float32)
        d, L = self.latent_size, self.num_layers
        if tuple(w.shape[1:]) not in ((d,), (L, d)):
            raise AdvfaceError(
                f"{self.name} takes w of shape (N, {d}) or w+ of shape (N, {L}, {d}). Received: "
                f"latents.shape={tuple(w.shape)}. Draw them with generator.sample(n, seed)."
            )
        images = self.model.synthesize(self.model.truncate(w), randomize_noise=False)
        return tf.clip_by_value((images + 1.0) / 2.0, 0.0, 1.0)


def from_saved(name: str, *, config: StyleGANConfig | None = None) -> StyleGANGenerator:
    """The StyleGAN ``name`` from the saved-models folder (``<name>.weights.h5`` and ``<name>.json``).

    Args:
        name: saved-models name.
        config: used when ``<name>.json`` holds no ``"config"``; without either it is an error.
    """
    meta = savedmodels.read_metadata(name) or {}
    if "config" in meta:
        try:
            config = StyleGANConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as exc:
            raise WeightsError(
                f"{savedmodels.models_dir() / (name + '.json')} holds an invalid StyleGAN config ({exc}). "
                f"Re-create it with `advface zoo convert {name} FILE`."
            ) from None
    if config is None:
        raise WeightsError(
            f"No StyleGAN configuration for {name}: {savedmodels.models_dir() / (name + '.json')} has no "
            f"'config'. Re-create it with `advface zoo convert {name} FILE`."
        )
    return StyleGANGenerator(stylegan(config, weights=name), name=name)


def stylegan_ffhq() -> StyleGANGenerator:
    """StyleGAN FFHQ 1024x1024 (``w`` in R^512, truncation psi 0.7 on the first 8 of 18 layers)."""
    return from_saved(FFHQ_NAME, config=stylegan_config("ffhq"))


def stylegan_ffhq_available() -> bool:
    """Whether the converted FFHQ weights are in the saved-models folder (no hash check)."""
    return savedmodels.weights_file(FFHQ_NAME).is_file()
