"""The one interface every face generator follows: :class:`LatentGenerator`.

The semantic attacks, direction learning and the GUI's sliders use only this interface, so a StyleGAN
converted from NVIDIA's pickle and the offline ``digiface-dcgan`` are interchangeable.

Latents live in one space per generator (``latent_space``): ``"z"`` for a generator without a mapping
network (a DCGAN), ``"w"`` for StyleGAN, whose :meth:`LatentGenerator.sample` draws ``z ~ N(0, I)`` and
maps it through the mapping network, and whose :meth:`LatentGenerator.synthesize` applies the truncation
trick to ``w`` before synthesis. A perturbation ``w + delta`` therefore goes through the same truncation
as ``w`` (scaled by ``psi`` in the first ``cutoff`` layers), exactly as in the semantic-robustness source.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError


@dataclass(frozen=True)
class Truncation:
    """The truncation trick: ``w_l = w_avg + psi (w_l - w_avg)`` for the layers ``l < cutoff``.

    Attributes:
        psi: 1 disables it; the StyleGAN FFHQ default is 0.7.
        cutoff: number of (coarse) layers it applies to, or None for all; FFHQ uses 8 of 18.
    """

    psi: float = 0.7
    cutoff: int | None = 8


class LatentGenerator:
    """A differentiable face generator over a latent space.

    Subclasses set the attributes and implement :meth:`synthesize` (and :meth:`map` when they have a
    mapping network).

    Attributes:
        name: registry name, e.g. ``"digiface-dcgan"``.
        latent_size: length of one latent vector.
        latent_space: ``"z"`` or ``"w"``: the space :meth:`sample` returns and :meth:`synthesize` takes.
        resolution: images are ``(resolution, resolution, 3)``.
        truncation: the truncation applied by :meth:`synthesize`, or None.
    """

    name: str = ""
    latent_size: int = 0
    latent_space: str = "z"
    resolution: int = 0
    truncation: Truncation | None = None

    @property
    def has_mapping(self) -> bool:
        """Whether :meth:`map` turns ``z`` into ``w`` (StyleGAN) rather than being the identity."""
        return self.latent_space == "w"

    def sample_z(self, n: int, seed: int = 0) -> np.ndarray:
        """``(n, z_size)`` float32 draws of ``z ~ N(0, I)`` from ``seed`` (the same seed, the same draws)."""
        _check_count(n)
        return np.random.default_rng(seed).standard_normal((n, self.z_size)).astype(np.float32)

    @property
    def z_size(self) -> int:
        return self.latent_size

    def map(self, z) -> tf.Tensor:  # noqa: F821 - tensorflow is imported on use
        """``z`` ``(N, z_size)`` to latents ``(N, latent_size)`` of :attr:`latent_space` (identity for z)."""
        import tensorflow as tf

        return tf.convert_to_tensor(z, tf.float32)

    def sample(self, n: int, seed: int = 0, *, batch_size: int = 64) -> np.ndarray:
        """``n`` latents of :attr:`latent_space`, float32 ``(n, latent_size)``, reproducible from ``seed``."""
        z = self.sample_z(n, seed)
        if not self.has_mapping:
            return z
        return np.concatenate([self.map(z[i : i + batch_size]).numpy() for i in range(0, n, batch_size)])

    def synthesize(self, latents) -> tf.Tensor:  # noqa: F821
        """Render latents: ``(N, latent_size)`` float32 -> images float32 ``(N, R, R, 3)`` in ``[0, 1]``.

        Differentiable with respect to ``latents`` (use it inside ``tf.GradientTape``).
        """
        raise NotImplementedError

    def images(self, latents, *, batch_size: int = 16) -> np.ndarray:
        """:meth:`synthesize` in batches, as a numpy array (for rendering many latents)."""
        latents = self.check_latents(latents)
        render = self._compiled_synthesize
        out = [render(latents[i : i + batch_size]).numpy() for i in range(0, len(latents), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.resolution, self.resolution, 3), np.float32)

    @functools.cached_property
    def _compiled_synthesize(self):
        """:meth:`synthesize` as one compiled graph (about 1.6x faster for StyleGAN at 1024 on a CPU)."""
        import tensorflow as tf

        return tf.function(lambda x: self.synthesize(x), reduce_retracing=True, autograph=False)

    def check_latents(self, latents) -> np.ndarray:
        """Latents as float32 ``(N, latent_size)`` (or per-layer ``(N, num_layers, latent_size)`` for a
        generator with style layers), or a one-line error that says what was expected."""
        array = np.asarray(latents, dtype=np.float32)
        layers = getattr(self, "num_layers", None)
        per_layer = layers is not None and array.ndim == 3 and array.shape[1] == layers
        if not (array.ndim == 2 or per_layer) or array.shape[-1] != self.latent_size:
            extra = f" or (N, {layers}, {self.latent_size})" if layers else ""
            raise AdvfaceError(
                f"{self.name} takes {self.latent_space} latents of shape (N, {self.latent_size}){extra}. "
                f"Received: latents.shape={array.shape}. Draw them with generator.sample(n, seed)."
            )
        if not np.all(np.isfinite(array)):
            raise AdvfaceError(f"{self.name}: latents contain NaN or infinity. Received: latents with NaN.")
        return array


@dataclass(frozen=True)
class GeneratorSpec:
    """A registry entry: what a generator is and how to get it.

    Attributes:
        name: registry name.
        description: what it is, with its reference.
        resolution: output image size.
        latent_size, latent_space: as :class:`LatentGenerator`.
        trained_on: its training data.
        weights: where the weights come from.
        licence: the weights' licence.
        build: returns the :class:`LatentGenerator`.
        available: whether its weights are on this machine (cheap check).
        convert: reads a foreign weights file (``advface zoo convert NAME FILE``), or None.
        source: the foreign file ``convert`` reads.
        directions: the attribute directions shipped for it (a folder under ``data/directions``), or "".
        install: the command that installs its weights, for generators that come in a package.
        face_box: where its faces sit, as fractions ``(left, top, right, bottom)`` of the image in dlib's
            box convention (brows to chin), for generators of centred face crops; None: detect faces.
    """

    name: str
    description: str
    resolution: int
    latent_size: int
    latent_space: str
    trained_on: str
    weights: str
    licence: str
    build: Callable[[], LatentGenerator] = field(repr=False, compare=False)
    available: Callable[[], bool] = field(repr=False, compare=False)
    convert: Callable[[Path], object] | None = field(default=None, repr=False, compare=False)
    source: str = ""
    directions: str = ""
    face_box: tuple[float, float, float, float] | None = None
    install: str = ""


def _check_count(n) -> None:
    if not isinstance(n, int | np.integer) or n < 1:
        raise AdvfaceError(f"The number of latents must be a positive integer. Received: n={n!r}.")
