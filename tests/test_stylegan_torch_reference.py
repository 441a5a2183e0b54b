"""advface's StyleGAN against an independent PyTorch reference of InterFaceGAN's generator, on one ``.pth``.

The reference below is written from the semantics of InterFaceGAN's ``models/stylegan_generator_model.py``
(``StyleGANGeneratorModel``: MappingModule, TruncationModule, SynthesisModule and its blocks) with the same
module tree, so its ``state_dict`` keys are InterFaceGAN's, and it loads the file the way InterFaceGAN's
``StyleGANGenerator.load`` does: ``torch.load``, the model's own ``truncation.truncation`` put in (their
converter drops it from the file), then a strict ``load_state_dict``. Every tensor of the file is therefore
interpreted by InterFaceGAN's rules (``nn.Linear`` / ``nn.Conv2d`` layouts, the fused upsampling kernel kept
as TF ``[k, k, in, out]`` and run through ``conv_transpose2d``, blur kernels and noise from their buffers,
the ``lod`` parameter), independently of how ``tests/stylegan_files.py`` wrote it or how advface reads it.

InterFaceGAN hard-codes 512-wide latents and its channel table; the reference takes those sizes as
arguments (from the test's configurations, not from the file) so that small networks run in a few seconds.
Everything else (wscale gains and learning-rate multipliers, truncation psi 0.7 on the first 8 layers,
fixed noise, fused scale from 128x128 with ``"auto"``) is InterFaceGAN's default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import stylegan_files as sf
import torch
import torch.nn.functional as F
from torch import nn

from advface.networks.stylegan import config_from_official, load_official, stylegan
from advface.networks.stylegan_convert import read_interfacegan_pth

BAR = 1e-4  # max abs difference allowed between the two generators' raw images
SQRT2 = math.sqrt(2.0)
MAPPING_LRMUL = 0.01  # InterFaceGAN's DenseBlock default, the official mapping_lrmul

# ---------------------------------------------------------------------------------------------------------
# The reference: InterFaceGAN's StyleGANGeneratorModel, NCHW, float64 once loaded.


def _lrelu(x):
    return F.leaky_relu(x, 0.2)


class WScale(nn.Module):
    """Equalised learning rate after a bias-free linear/conv: ``x * gain / sqrt(fan_in) * lrmul`` plus the
    trained ``bias`` times ``lrmul``."""

    def __init__(self, fan_in: int, channels: int, gain: float, lrmul: float):
        super().__init__()
        self.scale, self.lrmul = gain / math.sqrt(fan_in) * lrmul, lrmul
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.scale + self.bias.view(1, -1, *[1] * (x.dim() - 2)) * self.lrmul


class Dense(nn.Module):
    """``linear`` (``nn.Linear`` without bias, weight ``[out, in]``), ``wscale``, optional leaky ReLU 0.2.
    Defaults are the mapping layers' (gain sqrt(2), lrmul 0.01, leaky ReLU)."""

    def __init__(self, fan_in, width, *, gain=SQRT2, lrmul=MAPPING_LRMUL, activate=True):
        super().__init__()
        self.linear = nn.Linear(fan_in, width, bias=False)
        self.wscale = WScale(fan_in, width, gain, lrmul)
        self.activate = activate

    def forward(self, x):
        x = self.wscale(self.linear(x))
        return _lrelu(x) if self.activate else x


class Mapping(nn.Module):
    """Pixel norm of z, then ``dense0`` .. ``dense{L-1}`` (all with leaky ReLU, the last included)."""

    def __init__(self, z_dim, hidden, w_dim, num_layers):
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            fan_in, width = z_dim if i == 0 else hidden, w_dim if i == num_layers - 1 else hidden
            self.add_module(f"dense{i}", Dense(fan_in, width))

    def forward(self, z):
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.num_layers):
            x = getattr(self, f"dense{i}")(x)
        return x


class Truncation(nn.Module):
    """w -> w+ ``(N, L, D)``, ``w_avg + (w - w_avg) * coef[layer]`` with coef psi below ``layers``, else 1."""

    def __init__(self, num_layers, w_dim, psi, layers):
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))
        coefs = torch.ones(1, num_layers, 1)
        coefs[:, :layers] = psi
        self.register_buffer("truncation", coefs)

    def forward(self, w):
        wp = w.unsqueeze(1).expand(-1, self.truncation.shape[1], -1)
        return self.w_avg + (wp - self.w_avg) * self.truncation


class ApplyNoise(nn.Module):
    """The fixed ``noise`` buffer ``[1, 1, R, R]`` times the per-channel ``weight``, added."""

    def __init__(self, resolution, channels):
        super().__init__()
        self.register_buffer("noise", torch.zeros(1, 1, resolution, resolution))
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x + self.noise * self.weight.view(1, -1, 1, 1)


class StyleMod(nn.Module):
    """AdaIN: ``style = dense(w)`` (gain 1, lrmul 1, linear) read as ``[scale | shift]``;
    ``x (scale + 1) + shift``."""

    def __init__(self, channels, w_dim):
        super().__init__()
        self.dense = Dense(w_dim, 2 * channels, gain=1.0, lrmul=1.0, activate=False)

    def forward(self, x, w):
        scale, shift = self.dense(w).view(w.shape[0], 2, x.shape[1], 1, 1).unbind(dim=1)
        return x * (scale + 1) + shift


class Epilogue(nn.Module):
    """Noise, bias, leaky ReLU 0.2, instance norm (eps 1e-8), style modulation."""

    def __init__(self, resolution, channels, w_dim):
        super().__init__()
        self.apply_noise = ApplyNoise(resolution, channels)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style_mod = StyleMod(channels, w_dim)

    def forward(self, x, w):
        x = _lrelu(self.apply_noise(x) + self.bias.view(1, -1, 1, 1))
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = x * torch.rsqrt(x.square().mean(dim=(2, 3), keepdim=True) + 1e-8)
        return self.style_mod(x, w)


class FirstBlock(nn.Module):
    """The learned 4x4 constant ``first_layer`` ``[1, C, 4, 4]`` over the batch, then the epilogue."""

    def __init__(self, channels, w_dim):
        super().__init__()
        self.first_layer = nn.Parameter(torch.zeros(1, channels, 4, 4))
        self.epilogue = Epilogue(4, channels, w_dim)

    def forward(self, w):
        return self.epilogue(self.first_layer.expand(w.shape[0], -1, -1, -1), w)


class Blur(nn.Module):
    """Depthwise 3x3 filter from the ``kernel`` buffer ``[C, 1, 3, 3]``, zero padding 1."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("kernel", torch.zeros(channels, 1, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


class UpBlock(nn.Module):
    """2x upsampling convolution (gain sqrt(2)), blur, epilogue.

    Unfused: nearest 2x, then ``conv`` (``nn.Conv2d`` weight ``[out, in, 3, 3]``, padding 1). Fused: the
    raw TF kernel ``weight`` ``[3, 3, in, out]``, scaled, zero-padded spatially by one and its four shifted
    copies summed into a 4x4 kernel, laid out ``[in, out, 4, 4]`` for ``conv_transpose2d`` (stride 2,
    padding 1), with no spatial flip.
    """

    def __init__(self, resolution, c_in, c_out, w_dim, fused):
        super().__init__()
        self.fused = fused
        if fused:
            self.weight = nn.Parameter(torch.zeros(3, 3, c_in, c_out))
        else:
            self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.scale = SQRT2 / math.sqrt(c_in * 9)
        self.blur = Blur(c_out)
        self.epilogue = Epilogue(resolution, c_out, w_dim)

    def forward(self, x, w):
        if self.fused:
            k = F.pad((self.weight * self.scale).permute(2, 3, 0, 1), (1, 1, 1, 1))  # [in, out, 5, 5]
            k = k[..., 1:, 1:] + k[..., :-1, 1:] + k[..., 1:, :-1] + k[..., :-1, :-1]
            x = F.conv_transpose2d(x, k, stride=2, padding=1)
        else:
            x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest")) * self.scale
        return self.epilogue(self.blur(x), w)


class ConvBlock(nn.Module):
    """3x3 ``conv`` (``nn.Conv2d`` without bias, padding 1, gain sqrt(2)), epilogue."""

    def __init__(self, resolution, channels, w_dim):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.scale = SQRT2 / math.sqrt(channels * 9)
        self.epilogue = Epilogue(resolution, channels, w_dim)

    def forward(self, x, w):
        return self.epilogue(self.conv(x) * self.scale, w)


class ToRGB(nn.Module):
    """1x1 ``conv`` scaled by ``1 / sqrt(C)`` (gain 1), plus ``bias``."""

    def __init__(self, channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.scale = 1 / math.sqrt(channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x):
        return self.conv(x) * self.scale + self.bias.view(1, -1, 1, 1)


class Synthesis(nn.Module):
    """Blocks ``b = 1 .. B`` at ``2^(b+1)``: ``layer{2b-2}`` (constant or upsampling), ``layer{2b-1}``
    (conv), ``output{b-1}`` (to RGB); a scalar ``lod`` parameter. Blocks with ``b + lod < B + 1`` run and
    the last of them gives the image; the image is nearest-upsampled 2x for each block beyond."""

    def __init__(self, channels, w_dim, fused_scale, out_channels):
        super().__init__()
        self.num_blocks = len(channels) - 1
        for b in range(1, self.num_blocks + 1):
            res = 2 ** (b + 1)
            if b == 1:
                first = FirstBlock(channels[0], w_dim)
            else:
                fused = fused_scale is True or (fused_scale == "auto" and res >= 128)
                first = UpBlock(res, channels[b - 1], channels[b], w_dim, fused)
            self.add_module(f"layer{2 * b - 2}", first)
            self.add_module(f"layer{2 * b - 1}", ConvBlock(res, channels[b], w_dim))
            self.add_module(f"output{b - 1}", ToRGB(channels[b], out_channels))
        self.lod = nn.Parameter(torch.zeros(()))

    def forward(self, wp):
        lod, x, image = float(self.lod), None, None
        for b in range(1, self.num_blocks + 1):
            if b + lod < self.num_blocks + 1:
                first = getattr(self, f"layer{2 * b - 2}")
                x = first(wp[:, 0]) if b == 1 else first(x, wp[:, 2 * b - 2])
                x = getattr(self, f"layer{2 * b - 1}")(x, wp[:, 2 * b - 1])
                image = getattr(self, f"output{b - 1}")(x)
            else:
                image = F.interpolate(image, scale_factor=2, mode="nearest")
        return image


class InterFaceGANStyleGAN(nn.Module):
    """``synthesis(truncation(mapping(z)))`` with InterFaceGAN's module names.

    Args:
        resolution: R; ``channels`` has ``log2(R)`` entries: the constant's, then each resolution's from 4x4.
        z_dim, hidden, w_dim, mapping_layers: the mapping network's sizes (InterFaceGAN: 512, 512, 512, 8).
        fused_scale: True, False or ``"auto"`` (fused from 128x128).
        truncation_psi, truncation_layers: InterFaceGAN's model settings (0.7, 8).
    """

    def __init__(
        self,
        *,
        resolution,
        channels,
        z_dim,
        hidden,
        w_dim,
        mapping_layers=8,
        fused_scale="auto",
        truncation_psi=0.7,
        truncation_layers=8,
        out_channels=3,
    ):
        super().__init__()
        assert len(channels) == int(math.log2(resolution))
        self.mapping = Mapping(z_dim, hidden, w_dim, mapping_layers)
        num_layers = 2 * int(math.log2(resolution)) - 2
        self.truncation = Truncation(num_layers, w_dim, truncation_psi, truncation_layers)
        self.synthesis = Synthesis(channels, w_dim, fused_scale, out_channels)

    def load(self, path: Path) -> InterFaceGANStyleGAN:
        """As ``StyleGANGenerator.load``: the file's tensors, the model's own truncation coefficients,
        strict loading (every tensor of the file used, every parameter and buffer given)."""
        state = torch.load(path, weights_only=True)
        state["truncation.truncation"] = self.state_dict()["truncation.truncation"]
        self.load_state_dict(state, strict=True)
        return self.double().eval()

    @torch.no_grad()
    def forward(self, z):
        return self.synthesis(self.truncation(self.mapping(z)))


# ---------------------------------------------------------------------------------------------------------
# The files and the two generators


@dataclass(frozen=True)
class Spec:
    """A small StyleGAN: the helper's ``official_networks`` sizes and InterFaceGAN's ``fused_scale``."""

    resolution: int
    latent_size: int
    fmap_base: int
    fmap_max: int
    fused_scale: bool | str = "auto"

    def nf(self, stage):
        return min(int(self.fmap_base / 2.0**stage), self.fmap_max)

    @property
    def channels(self) -> list[int]:
        return [self.nf(1)] + [self.nf(b) for b in range(1, int(math.log2(self.resolution)))]


SPECS = {
    "32": Spec(resolution=32, latent_size=32, fmap_base=256, fmap_max=64),
    "32-fused": Spec(resolution=32, latent_size=32, fmap_base=256, fmap_max=64, fused_scale=True),
    # 16 channels down to 4 at 128x128: the 128x128 upsampling is fused (8 -> 4 channels), the rest not.
    "128": Spec(resolution=128, latent_size=16, fmap_base=256, fmap_max=16),
}


@dataclass(frozen=True)
class Case:
    """One ``.pth`` written by the helper, a batch of z, and advface's images for it (NCHW, float64)."""

    spec: Spec
    pth: Path
    z: np.ndarray
    advface: np.ndarray


def _write_pth(spec: Spec, folder: Path) -> Path:
    """The helper's random official arrays, stored as a trained network holds them (mapping weights and
    biases divided by the learning-rate multiplier, so that z matters; to-RGB weights small enough for
    images in about [-1, 1]), written as InterFaceGAN's ``.pth``."""
    arrays = sf.flat(
        sf.official_networks(
            7,
            resolution=spec.resolution,
            latent_size=spec.latent_size,
            dlatent_size=spec.latent_size,
            mapping_fmaps=spec.latent_size,
            fmap_base=spec.fmap_base,
            fmap_max=spec.fmap_max,
        )
    )
    for name in arrays:
        if name.startswith("mapping/"):
            arrays[name] = arrays[name] / np.float32(MAPPING_LRMUL)
        elif "ToRGB" in name and name.endswith("weight"):
            arrays[name] = arrays[name] * np.float32(0.1)
    return sf.write_interfacegan_pth(folder / "generator.pth", arrays, fused_scale=spec.fused_scale)


def _advface_images(spec: Spec, pth: Path, z: np.ndarray) -> np.ndarray:
    gs = read_interfacegan_pth(pth)
    config = config_from_official(gs.arrays, gs.static_kwargs)
    assert (config.truncation_psi, config.truncation_cutoff, config.fused_scale) == (0.7, 8, spec.fused_scale)
    model = load_official(stylegan(config), gs.arrays)
    fused = {r: config.fused_at(r) for r in (2**k for k in range(3, int(math.log2(spec.resolution)) + 1))}
    assert fused == {r: spec.fused_scale is True or r >= 128 for r in fused}
    return np.transpose(np.asarray(model(z), np.float64), (0, 3, 1, 2))


def reference(spec: Spec, pth: Path) -> InterFaceGANStyleGAN:
    """The reference built from the test's sizes and InterFaceGAN's defaults, loaded from ``pth``."""
    d = spec.latent_size
    model = InterFaceGANStyleGAN(
        resolution=spec.resolution,
        channels=spec.channels,
        z_dim=d,
        hidden=d,
        w_dim=d,
        fused_scale=spec.fused_scale,
    )
    return model.load(pth)


def reference_images(spec: Spec, pth: Path, z: np.ndarray) -> np.ndarray:
    return reference(spec, pth)(torch.from_numpy(z).double()).numpy()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """``case(name)``: the :class:`Case` of ``SPECS[name]``, made once per module."""
    made: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in made:
            spec = SPECS[name]
            pth = _write_pth(spec, tmp_path_factory.mktemp(f"stylegan-{name}"))
            z = np.random.default_rng(3).standard_normal((3, spec.latent_size)).astype(np.float32)
            made[name] = Case(spec, pth, z, _advface_images(spec, pth, z))
        return made[name]

    return get


# ---------------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("name", list(SPECS))
def test_advface_computes_what_interfacegan_computes_from_the_same_pth(case, name):
    c = case(name)
    ref = reference(c.spec, c.pth)
    if c.spec.resolution >= 128:  # InterFaceGAN's fused path is the one run at 128x128
        assert ref.synthesis.layer10.fused and not hasattr(ref.synthesis.layer10, "conv")
    expected = ref(torch.from_numpy(c.z).double()).numpy()
    assert expected.shape == c.advface.shape == (3, 3, c.spec.resolution, c.spec.resolution)
    assert 0.3 < np.abs(expected).max() < 4  # a real image range, not a degenerate network
    assert np.abs(expected[0] - expected[1]).max() > 0.1  # z matters: the mapping network is checked
    diff = np.abs(c.advface - expected).max()
    print(f"{name}: max |advface - reference| = {diff:.3g}, max |image| = {np.abs(expected).max():.3g}")
    assert diff <= BAR


def _flip_fused_kernel(state):
    state["synthesis.layer10.weight"] = state["synthesis.layer10.weight"].flip(0, 1)


def _perturb_one_conv_weight(state):
    state["synthesis.layer7.conv.weight"][1, 2, 0, 1] += 1.0


def _transpose_a_noise_buffer(state):
    key = "synthesis.layer9.epilogue.apply_noise.noise"
    state[key] = state[key].transpose(2, 3).contiguous()


def _untransposed_dense(state):  # as if the file held TF's [in, out]
    state["mapping.dense3.linear.weight"] = state["mapping.dense3.linear.weight"].t().contiguous()


@pytest.mark.parametrize(
    "mutate",
    [_flip_fused_kernel, _perturb_one_conv_weight, _transpose_a_noise_buffer, _untransposed_dense],
    ids=["flipped-fused-kernel", "one-conv-weight", "transposed-noise", "untransposed-dense"],
)
def test_the_comparison_fails_when_the_file_is_read_differently(case, tmp_path, mutate):
    """The reference fed a file changed as a misreading would change it no longer matches advface."""
    c = case("128")
    state = torch.load(c.pth, weights_only=True)
    mutate(state)
    torch.save(state, tmp_path / "changed.pth")
    diff = np.abs(c.advface - reference_images(c.spec, tmp_path / "changed.pth", c.z)).max()
    print(f"{mutate.__name__}: max difference {diff:.3g}")
    assert diff > 100 * BAR
