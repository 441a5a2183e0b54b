"""StyleGAN (v1) generator (Karras, Laine, Aila, "A Style-Based Generator Architecture for Generative
Adversarial Networks", CVPR 2019) in Keras 3, channels last, as NVIDIA's ``G_style`` computes it at
``lod = 0`` (a fully grown network), so the official ``Gs`` weights load and give the same images.

=============  =========================================================================================
network        computation
=============  =========================================================================================
mapping        z (N, latent) -> pixel norm -> ``mapping_layers`` x (dense, leaky ReLU 0.2) -> w (N, dlatent)
truncation     w -> w+ (N, L, dlatent): ``w_avg + psi (w - w_avg)`` in the layers ``< cutoff``, else w
synthesis      w+ -> learned 4x4 constant; per layer: [conv | 2x upscale conv + blur], noise, bias,
               leaky ReLU 0.2, instance norm, style modulation (AdaIN) with w+[:, layer]; two layers per
               resolution 4, 8, ..., R; 1x1 to-RGB -> images (N, R, R, channels), raw range ~[-1, 1]
=============  =========================================================================================

``L = 2 log2(R) - 2`` (18 at 1024). The official equalised learning rate (weights stored as ``N(0, 1)``
and scaled at run time by ``gain / sqrt(fan_in) * lrmul``) is folded into the weights by
:func:`load_official`, so every Keras layer here is a plain one. The upscaling convolution is either
nearest 2x upsampling then a 3x3 convolution, or (``fused_scale``, from 128x128 on with ``"auto"``) the
official transposed convolution with stride 2 whose 4x4 kernel sums the four shifted copies of the 3x3
kernel. The two compute the same function only when the fused path's 3x3 kernel is the spatially
rotated (180 degrees) one, so which is used is part of the network, not an implementation detail.

Official variable names (:func:`official_variables`) are ``"<component>/<tf name>"`` with the component
keys of ``Gs.components`` (``mapping``, ``synthesis``) and TF layouts (NCHW buffers, ``[k, k, in, out]``
kernels, ``[in, out]`` dense weights).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from advface.errors import WeightsError

_EPSILON = 1e-8
_LRELU_SLOPE = 0.2
_BLUR_TAPS = (1.0, 2.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Configuration


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_positive_int(name: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"StyleGANConfig: {name} must be a positive integer. Received: {name}={value!r}.")


@dataclass(frozen=True)
class StyleGANConfig:
    """The architecture of a StyleGAN generator and its sampling defaults (the official ``G_style`` kwargs).

    Attributes:
        resolution: output size R, a power of two from 32 to 1024 (8 and 16 also build, for tests).
        latent_size: length of z.
        dlatent_size: length of w.
        mapping_layers: dense layers in the mapping network.
        mapping_fmaps: width of the mapping layers before the last (which has ``dlatent_size``).
        mapping_lrmul: the mapping network's learning-rate multiplier (folded into its weights on load).
        fmap_base, fmap_decay, fmap_max: channel counts, ``nf(stage) = min(int(fmap_base /
            2 ** (stage * fmap_decay)), fmap_max)``; resolution ``2 ** r`` has ``nf(r - 1)`` channels.
        num_channels: image channels (3, RGB).
        fused_scale: True, False or ``"auto"``: whether upscaling convolutions are the fused transposed
            convolution; ``"auto"`` fuses those whose output is 128x128 or larger (as the official code).
        truncation_psi: default truncation strength (1 disables it).
        truncation_cutoff: default number of (coarse) layers truncated, None for all.
        randomize_noise: default for :meth:`StyleGAN.synthesize`: fresh noise each call instead of the
            fixed per-layer noise buffers.
    """

    resolution: int
    latent_size: int = 512
    dlatent_size: int = 512
    mapping_layers: int = 8
    mapping_fmaps: int = 512
    mapping_lrmul: float = 0.01
    fmap_base: int = 8192
    fmap_decay: float = 1.0
    fmap_max: int = 512
    num_channels: int = 3
    fused_scale: bool | str = "auto"
    truncation_psi: float = 0.7
    truncation_cutoff: int | None = 8
    randomize_noise: bool = False

    def __post_init__(self):
        r = self.resolution
        if not _is_int(r) or r < 8 or r > 1024 or r & (r - 1):
            raise ValueError(
                "StyleGANConfig: resolution must be a power of two from 32 to 1024 (8 and 16 for tests). "
                f"Received: resolution={r!r}."
            )
        for name in (
            "latent_size",
            "dlatent_size",
            "mapping_layers",
            "mapping_fmaps",
            "fmap_base",
            "fmap_max",
        ):
            _check_positive_int(name, getattr(self, name))
        _check_positive_int("num_channels", self.num_channels)
        for name in ("mapping_lrmul", "fmap_decay", "truncation_psi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(
                    f"StyleGANConfig: {name} must be a finite number. Received: {name}={value!r}."
                )
        if self.mapping_lrmul <= 0 or self.fmap_decay < 0:
            raise ValueError(
                "StyleGANConfig: mapping_lrmul must be > 0 and fmap_decay >= 0. Received: "
                f"mapping_lrmul={self.mapping_lrmul!r}, fmap_decay={self.fmap_decay!r}."
            )
        if self.fused_scale not in (True, False, "auto"):
            raise ValueError(
                f"StyleGANConfig: fused_scale must be True, False or 'auto'. Received: "
                f"fused_scale={self.fused_scale!r}."
            )
        cutoff = self.truncation_cutoff
        if cutoff is not None and (not _is_int(cutoff) or cutoff < 0):
            raise ValueError(
                "StyleGANConfig: truncation_cutoff must be an integer >= 0 or None (all layers). "
                f"Received: truncation_cutoff={cutoff!r}."
            )
        if not isinstance(self.randomize_noise, bool):
            raise ValueError(
                "StyleGANConfig: randomize_noise must be a bool. Received: "
                f"randomize_noise={self.randomize_noise!r}."
            )
        if self.nf(self.resolution_log2 - 1) < 1:
            raise ValueError(
                f"StyleGANConfig: fmap_base={self.fmap_base} leaves no channels at {r}x{r} (nf = "
                f"{self.nf(self.resolution_log2 - 1)}). Raise fmap_base or lower fmap_decay."
            )

    @property
    def resolution_log2(self) -> int:
        return int(self.resolution).bit_length() - 1

    @property
    def num_layers(self) -> int:
        """Number of style layers L (two per resolution from 4x4): ``2 log2(R) - 2``."""
        return 2 * self.resolution_log2 - 2

    def nf(self, stage: int) -> int:
        """Channel count of ``stage`` (the official formula); resolution ``2 ** r`` uses ``nf(r - 1)``."""
        return min(int(self.fmap_base / (2.0 ** (stage * self.fmap_decay))), self.fmap_max)

    def fused_at(self, resolution: int) -> bool:
        """Whether the upscaling convolution producing ``resolution`` x ``resolution`` is fused."""
        if self.fused_scale == "auto":
            return resolution >= 128
        return bool(self.fused_scale)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> StyleGANConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error that lists the known ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown StyleGANConfig keys. Received: {unknown}. Known: {', '.join(known)}.")
        return cls(**values)


STYLEGAN_CONFIGS: dict[str, StyleGANConfig] = {"ffhq": StyleGANConfig(resolution=1024)}


def stylegan_config(name: str) -> StyleGANConfig:
    """The configuration called ``name`` in :data:`STYLEGAN_CONFIGS`."""
    if name not in STYLEGAN_CONFIGS:
        raise ValueError(
            f"Unknown StyleGAN configuration. Received: name={name!r}. Known: {', '.join(STYLEGAN_CONFIGS)}."
        )
    return STYLEGAN_CONFIGS[name]


@dataclass(frozen=True)
class _Layer:
    """One style layer of the synthesis network: its official scope and Keras name."""

    index: int
    scope: str  # "4x4/Const", "4x4/Conv", "8x8/Conv0_up", "8x8/Conv1", ...
    kind: str  # "const", "conv" or "up"
    resolution: int
    in_channels: int
    channels: int

    @property
    def name(self) -> str:
        return self.scope.lower().replace("/", "_")


def _layers(config: StyleGANConfig) -> list[_Layer]:
    c4 = config.nf(1)
    out = [_Layer(0, "4x4/Const", "const", 4, c4, c4), _Layer(1, "4x4/Conv", "conv", 4, c4, c4)]
    for r in range(3, config.resolution_log2 + 1):
        res, c_in, c = 2**r, config.nf(r - 2), config.nf(r - 1)
        out.append(_Layer(len(out), f"{res}x{res}/Conv0_up", "up", res, c_in, c))
        out.append(_Layer(len(out), f"{res}x{res}/Conv1", "conv", res, c, c))
    return out


# ----------------------------------------------------------------------------------------------------------
# Layers (NHWC). Each is the official op with its runtime weight scaling already folded into the weights.


@keras.saving.register_keras_serializable(package="advface")
class PixelNorm(layers.Layer):
    """``x * rsqrt(mean(x ** 2, axis=-1) + 1e-8)``: each feature vector scaled to unit RMS."""

    def call(self, x):
        return x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + _EPSILON)


@keras.saving.register_keras_serializable(package="advface")
class ConstantInput(layers.Layer):
    """The learned ``(1, 4, 4, channels)`` input of the synthesis network, repeated over the batch of ``w``.

    Args:
        channels: its channel count.
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, w_shape):
        self.const = self.add_weight(name="const", shape=(1, 4, 4, self.channels), initializer="ones")

    def call(self, w):
        return ops.tile(self.const, [ops.shape(w)[0], 1, 1, 1])

    def compute_output_shape(self, w_shape):
        return (w_shape[0], 4, 4, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="advface")
class NoiseInjection(layers.Layer):
    """``x + noise * scale``: single-channel noise ``(N or 1, R, R, 1)`` times a learned per-channel scale.

    The layer holds a fixed noise buffer ``(1, R, R, 1)`` (non-trainable, the official ``noise{i}``),
    used when ``call`` gets no ``noise``; pass ``noise`` of shape ``(N, R, R, 1)`` for fresh noise.

    Args:
        resolution: R.
    """

    def __init__(self, resolution: int, **kwargs):
        super().__init__(**kwargs)
        self.resolution = resolution

    def build(self, x_shape, noise_shape=None):
        r = self.resolution
        init = keras.initializers.RandomNormal(stddev=1.0)
        self.noise = self.add_weight(name="noise", shape=(1, r, r, 1), initializer=init, trainable=False)
        self.scale = self.add_weight(name="scale", shape=(x_shape[-1],), initializer="zeros")

    def call(self, x, noise=None):
        return x + (self.noise if noise is None else noise) * self.scale

    def compute_output_shape(self, x_shape, noise_shape=None):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "resolution": self.resolution}


@keras.saving.register_keras_serializable(package="advface")
class Bias(layers.Layer):
    """``x + bias`` over the last axis."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + self.bias


@keras.saving.register_keras_serializable(package="advface")
class InstanceNorm(layers.Layer):
    """Per sample and channel over H, W: ``(x - mean) * rsqrt(mean((x - mean) ** 2) + 1e-8)``."""

    def call(self, x):
        x = x - ops.mean(x, axis=(1, 2), keepdims=True)
        return x * ops.rsqrt(ops.mean(ops.square(x), axis=(1, 2), keepdims=True) + _EPSILON)


@keras.saving.register_keras_serializable(package="advface")
class StyleModulation(layers.Layer):
    """AdaIN style modulation: ``style = dense(w)`` of width 2C, ``x * (style[:C] + 1) + style[C:]``.

    Args:
        channels: C, the channel count of ``x`` (N, H, W, C); ``w`` is (N, dlatent).
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.dense = layers.Dense(2 * channels, kernel_initializer="lecun_normal", name="dense")

    def build(self, x_shape, w_shape):
        self.dense.build(w_shape)

    def call(self, x, w):
        style = self.dense(w)[:, None, None, :]
        return x * (style[..., : self.channels] + 1.0) + style[..., self.channels :]

    def compute_output_shape(self, x_shape, w_shape):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="advface")
class UpscaleConv2D(layers.Layer):
    """2x upscaling and a 3x3 convolution ('SAME', no bias): ``(N, H, W, in) -> (N, 2H, 2W, filters)``.

    ``fused=False``: nearest-neighbour 2x upsampling, then the convolution with ``kernel``.
    ``fused=True`` (the official fused op): a transposed convolution with stride 2 and 'SAME' padding whose
    4x4 kernel is ``kernel`` transposed to ``(3, 3, filters, in)``, zero-padded by one and the four shifted
    copies summed. It equals the unfused op with the kernel rotated by 180 degrees.

    Args:
        filters: output channels.
        fused: which of the two.
    """

    def __init__(self, filters: int, fused: bool, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.fused = bool(fused)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(3, 3, input_shape[-1], self.filters), initializer="he_normal"
        )

    def call(self, x):
        if not self.fused:
            x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
            return ops.conv(x, self.kernel, padding="same")
        w = ops.pad(ops.transpose(self.kernel, (0, 1, 3, 2)), [[1, 1], [1, 1], [0, 0], [0, 0]])
        w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]  # (4, 4, filters, in)
        return ops.conv_transpose(x, w, strides=2, padding="same")

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "fused": self.fused}


@keras.saving.register_keras_serializable(package="advface")
class Blur(layers.Layer):
    """Depthwise low-pass filter ``[1, 2, 1]^T [1, 2, 1] / 16`` with zero 'SAME' padding."""

    def build(self, input_shape):
        taps = np.asarray(_BLUR_TAPS, np.float32)
        f = np.outer(taps, taps) / np.sum(taps) ** 2
        self._filter = np.tile(f[:, :, None, None], (1, 1, input_shape[-1], 1)).astype(np.float32)

    def call(self, x):
        return ops.depthwise_conv(x, ops.convert_to_tensor(self._filter), padding="same")


@keras.saving.register_keras_serializable(package="advface")
class SynthesisLayer(layers.Layer):
    """One style layer (the official ``layer_epilogue`` after its convolution).

    ``kind="const"``: x is the constant; ``"conv"``: 3x3 conv; ``"up"``: :class:`UpscaleConv2D` then
    :class:`Blur`. Then noise, bias, leaky ReLU 0.2, instance norm, style modulation with ``w``.

    Args:
        kind: ``"const"``, ``"conv"`` or ``"up"``.
        channels: output channels C.
        resolution: output resolution R.
        fused: for ``"up"``, whether the upscaling convolution is fused.

    Call args:
        x: float32 (N, R/2, R/2, C_in) for ``"up"``, else (N, R, R, C).
        w: (N, dlatent) this layer's w.
        noise: None (the layer's fixed buffer) or (N, R, R, 1).
    """

    def __init__(self, kind: str, channels: int, resolution: int, fused: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.channels, self.resolution, self.fused = kind, channels, resolution, bool(fused)
        self.conv = self.blur = None
        if kind == "conv":
            self.conv = layers.Conv2D(
                channels, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="conv"
            )
        elif kind == "up":
            self.conv, self.blur = UpscaleConv2D(channels, fused, name="conv"), Blur(name="blur")
        elif kind != "const":
            raise ValueError(f"SynthesisLayer kind must be const, conv or up. Received: kind={kind!r}.")
        self.noise = NoiseInjection(resolution, name="noise")
        self.bias = Bias(name="bias")
        self.instance_norm = InstanceNorm(name="instance_norm")
        self.style = StyleModulation(channels, name="style")

    def build(self, x_shape, w_shape, noise_shape=None):
        shape = (x_shape[0], self.resolution, self.resolution, self.channels)
        if self.conv is not None:
            self.conv.build(x_shape)
            if self.blur is not None:
                self.blur.build(shape)
        self.noise.build(shape)
        self.bias.build(shape)
        self.style.build(shape, w_shape)

    def call(self, x, w, noise=None):
        if self.conv is not None:
            x = self.conv(x)
        if self.blur is not None:
            x = self.blur(x)
        x = self.bias(self.noise(x, noise))
        x = self.instance_norm(ops.leaky_relu(x, _LRELU_SLOPE))
        return self.style(x, w)

    def compute_output_shape(self, x_shape, w_shape, noise_shape=None):
        return (x_shape[0], self.resolution, self.resolution, self.channels)

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "channels": self.channels,
            "resolution": self.resolution,
            "fused": self.fused,
        }


@keras.saving.register_keras_serializable(package="advface")
class TruncationTrick(layers.Layer):
    """w (N, D) or w+ (N, L, D) -> w+ (N, L, D): ``w_avg + psi (w - w_avg)`` in layers ``< cutoff``.

    Holds ``w_avg`` (D,), the official ``dlatent_avg`` (non-trainable).

    Args:
        num_layers: L.
        psi, cutoff: the defaults of ``call`` (``cutoff=None``: all layers).
    """

    def __init__(self, num_layers: int, psi: float = 0.7, cutoff: int | None = 8, **kwargs):
        super().__init__(**kwargs)
        self.num_layers, self.psi, self.cutoff = num_layers, float(psi), cutoff

    def build(self, input_shape):
        self.w_avg = self.add_weight(
            name="w_avg", shape=(input_shape[-1],), initializer="zeros", trainable=False
        )

    def call(self, w, psi=None, cutoff=None):
        psi = self.psi if psi is None else float(psi)
        cutoff = self.cutoff if cutoff is None else cutoff
        if len(w.shape) == 2:
            w = ops.repeat(w[:, None, :], self.num_layers, axis=1)
        if psi == 1.0 or cutoff == 0:  # as the official code: no truncation at all, w passes unchanged
            return w
        layer = np.arange(self.num_layers)
        coefs = np.where(layer < (self.num_layers if cutoff is None else cutoff), psi, 1.0)
        return self.w_avg + coefs.astype(np.float32)[None, :, None] * (w - self.w_avg)

    def compute_output_shape(self, w_shape):
        return (w_shape[0], self.num_layers, w_shape[-1])

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers, "psi": self.psi, "cutoff": self.cutoff}


# ----------------------------------------------------------------------------------------------------------
# Networks


def build_mapping(config: StyleGANConfig) -> keras.Model:
    """The mapping network: z ``(N, latent_size)`` -> w ``(N, dlatent_size)``."""
    z = keras.Input((config.latent_size,), name="z")
    x = PixelNorm(name="pixel_norm")(z)
    for i in range(config.mapping_layers):
        width = config.dlatent_size if i == config.mapping_layers - 1 else config.mapping_fmaps
        x = layers.Dense(width, kernel_initializer="he_normal", name=f"dense{i}")(x)
        x = layers.LeakyReLU(negative_slope=_LRELU_SLOPE, name=f"lrelu{i}")(x)
    return keras.Model(z, x, name="mapping")


def build_synthesis(config: StyleGANConfig) -> keras.Model:
    """The synthesis network with its fixed noise: w+ ``(N, L, dlatent)`` -> ``(N, R, R, channels)`` raw."""
    wplus = keras.Input((config.num_layers, config.dlatent_size), name="wplus")
    parts = {"const": ConstantInput(config.nf(1), name="const")}
    for layer in _layers(config):
        fused = layer.kind == "up" and config.fused_at(layer.resolution)
        parts[layer.name] = SynthesisLayer(
            layer.kind, layer.channels, layer.resolution, fused, name=layer.name
        )
    parts["to_rgb"] = layers.Conv2D(config.num_channels, 1, kernel_initializer="lecun_normal", name="to_rgb")
    return keras.Model(wplus, _synthesis_forward(parts, config, wplus), name="synthesis")


def _synthesis_forward(parts, config: StyleGANConfig, wplus, noises=None):
    """Run the synthesis layers ``parts`` (name -> layer) on ``wplus``; ``noises``: None or one per layer."""
    x = parts["const"](wplus[:, 0])
    for layer in _layers(config):
        x = parts[layer.name](x, wplus[:, layer.index], None if noises is None else noises[layer.index])
    return parts["to_rgb"](x)


@keras.saving.register_keras_serializable(package="advface")
class StyleGAN(keras.Model):
    """The StyleGAN generator ``G_style``: ``call(z) = synthesize(truncate(map(z)))``.

    Attributes:
        config: its :class:`StyleGANConfig`.
        mapping: z ``(N, latent_size)`` -> w ``(N, dlatent_size)``.
        synthesis: w+ ``(N, num_layers, dlatent_size)`` -> images ``(N, R, R, num_channels)`` float32 in
            the network's raw range (roughly [-1, 1], not clipped), with the fixed noise buffers.
        w_avg: the mean w ``(dlatent_size,)`` (non-trainable), centre of the truncation trick.

    Args:
        config: the architecture.
    """

    def __init__(self, config: StyleGANConfig, **kwargs):
        mapping, synthesis = build_mapping(config), build_synthesis(config)
        z = keras.Input((config.latent_size,), name="z")
        trick = TruncationTrick(
            config.num_layers, config.truncation_psi, config.truncation_cutoff, name="truncation"
        )
        kwargs.setdefault("name", "stylegan")
        super().__init__(z, synthesis(trick(mapping(z))), **kwargs)
        self.config = config
        self.mapping = mapping
        self.synthesis = synthesis
        self._trick = trick

    @property
    def w_avg(self):
        return self._trick.w_avg

    def map(self, z):
        """z ``(N, latent_size)`` -> w ``(N, dlatent_size)``."""
        return self.mapping(ops.convert_to_tensor(z, "float32"))

    def truncate(self, w, psi: float | None = None, cutoff: int | None = None):
        """w ``(N, D)`` or w+ ``(N, L, D)`` -> w+ ``(N, L, D)``: ``w_avg + psi (w - w_avg)`` in layers ``<
        cutoff``. ``psi``/``cutoff`` default to the config's (pass ``cutoff=num_layers`` for all layers)."""
        w = ops.convert_to_tensor(w, "float32")
        d, L = self.config.dlatent_size, self.config.num_layers
        if tuple(w.shape[1:]) not in ((d,), (L, d)):
            raise ValueError(
                f"truncate takes w (N, {d}) or w+ (N, {L}, {d}). Received: w.shape={tuple(w.shape)}."
            )
        return self._trick(w, psi=psi, cutoff=cutoff)

    def synthesize(self, wplus, randomize_noise: bool | None = None, seed: int | None = None):
        """w+ ``(N, num_layers, dlatent_size)`` -> images ``(N, R, R, num_channels)`` float32, raw range.

        Args:
            wplus: the per-layer styles (see :meth:`truncate`).
            randomize_noise: None (the config's default), False (the fixed noise buffers: deterministic and
                usable inside ``tf.function``) or True (fresh standard normal noise, drawn with numpy, so
                for eager calls with a known batch size only).
            seed: seeds the fresh noise (the same seed, the same noise); ignored for fixed noise.
        """
        wplus = ops.convert_to_tensor(wplus, "float32")
        expected = (self.config.num_layers, self.config.dlatent_size)
        if tuple(wplus.shape[1:]) != expected:
            raise ValueError(
                f"synthesize takes w+ of shape (N, {expected[0]}, {expected[1]}); turn w into w+ with "
                "truncate() first. "
                f"Received: wplus.shape={tuple(wplus.shape)}."
            )
        randomize = self.config.randomize_noise if randomize_noise is None else randomize_noise
        if not randomize:
            return self.synthesis(wplus)
        if wplus.shape[0] is None:
            raise ValueError(
                "randomize_noise=True draws the noise with numpy and needs a known batch size; call "
                "synthesize eagerly. Received: wplus.shape=(None, ...)."
            )
        rng, n = np.random.default_rng(seed), int(wplus.shape[0])
        noises = [
            ops.convert_to_tensor(rng.standard_normal((n, layer.resolution, layer.resolution, 1)), "float32")
            for layer in _layers(self.config)
        ]
        parts = {layer.name: layer for layer in self.synthesis.layers}
        return _synthesis_forward(parts, self.config, wplus, noises)

    def call(self, z, training=None):
        return self.synthesize(self.truncate(self.map(z)))

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(StyleGANConfig.from_dict(config["config"]), name=config.get("name", "stylegan"))


def stylegan(config: StyleGANConfig | str, *, weights=None) -> StyleGAN:
    """Build a StyleGAN generator.

    Args:
        config: a :class:`StyleGANConfig` or a name in :data:`STYLEGAN_CONFIGS`.
        weights: None (random initialisation), a ``.weights.h5`` path, or a saved-models name.

    Returns:
        The :class:`StyleGAN` model (z ``(N, latent_size)`` -> raw images ``(N, R, R, num_channels)``).
    """
    if isinstance(config, str):
        config = stylegan_config(config)
    if not isinstance(config, StyleGANConfig):
        raise TypeError(f"stylegan takes a StyleGANConfig or a config name. Received: config={config!r}.")
    model = StyleGAN(config)
    if weights is not None:
        from advface.savedmodels import resolve_weights

        path = resolve_weights(weights)
        try:
            model.load_weights(path)
        except (ValueError, OSError) as exc:
            raise WeightsError(
                f"{path} does not hold weights of this StyleGAN ({str(exc).splitlines()[0][:120]}). Pass the "
                "file `advface zoo convert` made with the same configuration."
            ) from None
    return model


# ----------------------------------------------------------------------------------------------------------
# The official network's variables


def official_variables(config: StyleGANConfig) -> dict[str, tuple[int, ...]]:
    """Every variable of the official ``Gs`` (``G_style``) for ``config``, in the official order.

    Keys are ``"<component>/<tf name>"`` (``Gs`` own variables have no prefix); values their TF shapes:
    ``lod``, ``dlatent_avg``; then ``synthesis/``: ``lod``, ``noise{i}`` [1, 1, R_i, R_i], per layer
    scope (``4x4/Const``, ``4x4/Conv``, ``{r}x{r}/Conv0_up``, ``{r}x{r}/Conv1``) ``weight`` [3, 3, in, out]
    (``const`` [1, C, 4, 4] for the constant), ``Noise/weight`` [C], ``bias`` [C], ``StyleMod/weight``
    [dlatent, 2C], ``StyleMod/bias`` [2C], and ``ToRGB_lod{k}`` [1, 1, C, channels] / [channels] after
    each resolution (in the creation order of the official template graph); then ``mapping/Dense{i}``.
    """
    out: dict[str, tuple[int, ...]] = {"lod": (), "dlatent_avg": (config.dlatent_size,), "synthesis/lod": ()}
    for layer in _layers(config):
        out[f"synthesis/noise{layer.index}"] = (1, 1, layer.resolution, layer.resolution)
    log2 = config.resolution_log2
    for layer in _layers(config):
        c, s = layer.channels, f"synthesis/{layer.scope}"
        if layer.kind == "const":
            out[f"{s}/const"] = (1, c, 4, 4)
        else:
            out[f"{s}/weight"] = (3, 3, layer.in_channels, c)
        out[f"{s}/Noise/weight"] = (c,)
        out[f"{s}/bias"] = (c,)
        out[f"{s}/StyleMod/weight"] = (config.dlatent_size, 2 * c)
        out[f"{s}/StyleMod/bias"] = (2 * c,)
        if layer.index % 2 == 1:  # the resolution is complete: its ToRGB follows
            lod = log2 - (layer.resolution.bit_length() - 1)
            out[f"synthesis/ToRGB_lod{lod}/weight"] = (1, 1, c, config.num_channels)
            out[f"synthesis/ToRGB_lod{lod}/bias"] = (config.num_channels,)
    fan_in = config.latent_size
    for i in range(config.mapping_layers):
        width = config.dlatent_size if i == config.mapping_layers - 1 else config.mapping_fmaps
        out[f"mapping/Dense{i}/weight"] = (fan_in, width)
        out[f"mapping/Dense{i}/bias"] = (width,)
        fan_in = width
    return out


# Official G_style / G_mapping / G_synthesis kwargs: those that must keep the value this port implements,
# those that set a config field, and those that only matter for training or graph construction.
_FIXED_KWARGS = {
    "label_size": 0,
    "use_styles": True,
    "const_input_layer": True,
    "use_noise": True,
    "nonlinearity": "lrelu",
    "mapping_nonlinearity": "lrelu",
    "use_wscale": True,
    "use_pixel_norm": False,
    "use_instance_norm": True,
    "normalize_latents": True,
    "blur_filter": [1, 2, 1],
    "dtype": "float32",
}
_CONFIG_KWARGS = {f.name for f in dataclasses.fields(StyleGANConfig)}
_STRUCTURES = ("auto", "fixed", "linear", "recursive")  # identical at lod 0, the only lod loaded
_IGNORED_KWARGS = {
    "structure",
    "dlatent_broadcast",
    "truncation_psi_val",
    "truncation_cutoff_val",
    "dlatent_avg_beta",
    "style_mixing_prob",
    "is_training",
    "is_validation",
    "is_template_graph",
    "force_clean_graph",
    "components",
}


def config_from_official(arrays: dict[str, np.ndarray], static_kwargs: dict | None = None) -> StyleGANConfig:
    """The :class:`StyleGANConfig` of an official ``Gs`` from its variables (``official_variables`` names).

    Sizes (resolution, latent and dlatent sizes, mapping depth and width, channel counts, image channels)
    are read from the array shapes; ``fmap_base``/``fmap_max`` are chosen to reproduce every channel
    count with ``fmap_decay = 1`` (the defaults 8192/512 when they do). What shapes cannot tell
    (``mapping_lrmul``, ``fused_scale``, ``truncation_psi``, ``truncation_cutoff``, ``randomize_noise``)
    comes from ``static_kwargs`` (the pickle's ``Gs.static_kwargs``) when present, else the defaults; the
    official ways of disabling truncation (``truncation_psi=None``, ``truncation_cutoff`` None or ``<= 0``)
    become ``truncation_psi=1`` (with the default cutoff 8).

    Raises:
        WeightsError: the arrays are not a StyleGAN generator, or ``static_kwargs`` asks for an
            architecture this port does not implement (the message names the key), or contradicts the
            shapes.
    """
    kwargs = dict(static_kwargs or {})
    _check_static_kwargs(kwargs)
    shape = {name: tuple(np.shape(a)) for name, a in arrays.items()}
    for need in ("mapping/Dense0/weight", "synthesis/4x4/Const/bias", "synthesis/ToRGB_lod0/bias"):
        if need not in shape:
            raise WeightsError(
                f"These arrays are not an official StyleGAN Gs: {need!r} is missing. Received: "
                f"{len(shape)} arrays, e.g. {sorted(shape)[:5]}. Pass the generator Gs of the pickle."
            )
    mapping_layers = 0
    while f"mapping/Dense{mapping_layers}/weight" in shape:
        mapping_layers += 1
    scopes = [int(m[1]) for m in (re.match(r"synthesis/(\d+)x\1/", n) for n in shape) if m]
    channels = {r.bit_length() - 2: shape[f"synthesis/{r}x{r}/Conv1/bias"][0] for r in set(scopes) if r > 4}
    channels[1] = shape["synthesis/4x4/Const/bias"][0]
    inferred = {
        "resolution": max(scopes),
        "latent_size": shape["mapping/Dense0/weight"][0],
        "dlatent_size": shape[f"mapping/Dense{mapping_layers - 1}/weight"][1],
        "mapping_layers": mapping_layers,
        "num_channels": shape["synthesis/ToRGB_lod0/bias"][0],
    }
    if mapping_layers > 1:
        inferred["mapping_fmaps"] = shape["mapping/Dense0/weight"][1]
    given = {k: v for k, v in kwargs.items() if k in _CONFIG_KWARGS}
    for key, value in inferred.items():
        if key in given and given[key] != value:
            raise WeightsError(
                f"static_kwargs[{key!r}] contradicts the arrays, which hold {key}={value}. Received: "
                f"{key}={given[key]!r}. Pass the static_kwargs of the same network."
            )
    values = {**given, **inferred}
    if not {"fmap_base", "fmap_max", "fmap_decay"} & set(given):
        values["fmap_base"], values["fmap_max"] = _infer_fmaps(channels)
    psi, cutoff = given.get("truncation_psi", 0.7), given.get("truncation_cutoff", 8)
    if psi is None or cutoff is None or cutoff <= 0:  # the official code then applies no truncation
        values["truncation_psi"], values["truncation_cutoff"] = 1.0, 8
    try:
        config = StyleGANConfig(**values)
    except ValueError as exc:
        raise WeightsError(f"Unsupported StyleGAN: {exc}") from None
    wrong = {s: c for s, c in channels.items() if config.nf(s) != c}
    if wrong:
        raise WeightsError(
            f"fmap_base={config.fmap_base}, fmap_max={config.fmap_max}, fmap_decay={config.fmap_decay} "
            "do not give the arrays' channel counts. Received: channels by stage "
            f"{dict(sorted(channels.items()))}."
        )
    return config


def _check_static_kwargs(kwargs: dict) -> None:
    for key, value in kwargs.items():
        if key in _FIXED_KWARGS:
            expected = _FIXED_KWARGS[key]
            same = (
                list(map(float, value)) == list(map(float, expected))
                if key == "blur_filter" and value is not None
                else value == expected
            )
            if not same:
                raise WeightsError(
                    f"This StyleGAN port implements only {key}={expected!r} (the official FFHQ/CelebA-HQ "
                    f"architecture). Received: {key}={value!r}."
                )
        elif key == "structure":
            if value not in _STRUCTURES:
                raise WeightsError(f"Unknown structure. Received: structure={value!r}. Known: {_STRUCTURES}.")
        elif key not in _CONFIG_KWARGS and key not in _IGNORED_KWARGS:
            known = sorted(set(_FIXED_KWARGS) | _CONFIG_KWARGS | _IGNORED_KWARGS)
            raise WeightsError(
                f"Unknown StyleGAN static kwarg. Received: {key}={value!r}. Known: {', '.join(known)}."
            )


def _infer_fmaps(channels: dict[int, int]) -> tuple[int, int]:
    """``(fmap_base, fmap_max)`` with ``min(int(fmap_base / 2 ** stage), fmap_max) == channels[stage]``."""
    top = max(channels.values())
    candidates = [(8192, 512)] + [(c * 2**s, m) for s, c in sorted(channels.items()) for m in (512, top)]
    for base, cap in candidates:
        if all(min(int(base / 2.0**s), cap) == c for s, c in channels.items()):
            return base, cap
    raise WeightsError(
        "No fmap_base/fmap_max with fmap_decay=1 gives these channel counts (stage: channels). Received: "
        f"{dict(sorted(channels.items()))}. Pass fmap_base, fmap_max and fmap_decay in static_kwargs."
    )


def load_official(model: StyleGAN, arrays: dict[str, np.ndarray]) -> StyleGAN:
    """Assign official ``Gs`` variables (``official_variables`` names, TF layouts) to ``model``.

    The equalised-learning-rate runtime coefficients are folded in: a weight of fan-in ``f`` is multiplied
    by ``gain / sqrt(f) * lrmul`` (gain sqrt(2) for the mapping and convolution layers, 1 for the style
    dense layers and to-RGB; ``lrmul`` is ``mapping_lrmul`` in the mapping network, else 1) and mapping
    biases by ``mapping_lrmul``. NCHW buffers become NHWC. ``ToRGB_lod{k}`` for ``k > 0`` (the
    progressive-growing outputs of lower resolutions) are checked for shape and deliberately unused: at
    ``lod = 0`` the official network does not use them either.

    Args:
        model: a :class:`StyleGAN` built with the matching config (see :func:`config_from_official`).
        arrays: every official variable, nothing else.

    Returns:
        ``model``, its weights replaced.

    Raises:
        WeightsError: arrays missing, unknown or of the wrong shape (all listed), or ``lod != 0`` (a network
            caught mid progressive growing, which this port does not support).
    """
    config = model.config
    expected = official_variables(config)
    missing = [n for n in expected if n not in arrays]
    unknown = sorted(n for n in arrays if n not in expected)
    wrong = [
        f"{n} {tuple(np.shape(arrays[n]))} (expected {expected[n]})"
        for n in expected
        if n in arrays and tuple(np.shape(arrays[n])) != expected[n]
    ]
    if missing or unknown or wrong:
        problems = [
            f"{label} ({len(names)}): {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}"
            for label, names in (("missing", missing), ("unknown", unknown), ("wrong shape", wrong))
            if names
        ]
        raise WeightsError(
            f"The arrays do not match an official StyleGAN Gs of resolution {config.resolution}. Received: "
            f"{'; '.join(problems)}. Build the model with config_from_official(arrays) and pass every array "
            "of Gs."
        )
    for name in ("lod", "synthesis/lod"):
        if float(np.asarray(arrays[name])) != 0.0:
            raise WeightsError(
                f"Only fully grown StyleGANs (lod = 0) are supported. Received: {name}="
                f"{float(np.asarray(arrays[name]))}. Use the final snapshot of the training run."
            )
    for name, (variable, convert) in _official_targets(model).items():
        value = convert(np.asarray(arrays[name], np.float32))
        variable.assign(value.astype(np.float32))
    return model


def _official_targets(model: StyleGAN) -> dict:
    """``{official name: (keras variable, converter from the TF array)}`` for every used variable."""
    config, synthesis, mapping = model.config, model.synthesis, model.mapping
    sqrt2 = math.sqrt(2.0)

    def scaled(gain, lrmul=1.0):
        return lambda w: w * (gain / math.sqrt(np.prod(w.shape[:-1])) * lrmul)

    def nchw_to_nhwc(a):
        return np.transpose(a, (0, 2, 3, 1))

    same = lambda a: a  # noqa: E731
    targets = {"dlatent_avg": (model.w_avg, same)}
    for i in range(config.mapping_layers):
        dense = mapping.get_layer(f"dense{i}")
        targets[f"mapping/Dense{i}/weight"] = (dense.kernel, scaled(sqrt2, config.mapping_lrmul))
        targets[f"mapping/Dense{i}/bias"] = (dense.bias, lambda b: b * config.mapping_lrmul)
    targets["synthesis/4x4/Const/const"] = (synthesis.get_layer("const").const, nchw_to_nhwc)
    for layer in _layers(config):
        part, s = synthesis.get_layer(layer.name), f"synthesis/{layer.scope}"
        targets[f"synthesis/noise{layer.index}"] = (part.noise.noise, nchw_to_nhwc)
        if part.conv is not None:
            targets[f"{s}/weight"] = (part.conv.kernel, scaled(sqrt2))
        targets[f"{s}/Noise/weight"] = (part.noise.scale, same)
        targets[f"{s}/bias"] = (part.bias.bias, same)
        targets[f"{s}/StyleMod/weight"] = (part.style.dense.kernel, scaled(1.0))
        targets[f"{s}/StyleMod/bias"] = (part.style.dense.bias, same)
    to_rgb = synthesis.get_layer("to_rgb")
    targets["synthesis/ToRGB_lod0/weight"] = (to_rgb.kernel, scaled(1.0))
    targets["synthesis/ToRGB_lod0/bias"] = (to_rgb.bias, same)
    return targets
