"""StyleGAN (v1): each layer against its numpy formula, whole networks against an independent numpy forward
on raw official-layout arrays (tests/stylegan_reference.py), the official variable table, the loader's
errors and the LatentGenerator wrapper."""

import re

import numpy as np
import pytest
import stylegan_reference as ref
import tensorflow as tf

from advface import savedmodels
from advface.errors import AdvfaceError, WeightsError
from advface.generators.stylegan import StyleGANGenerator, from_saved, stylegan_ffhq_available
from advface.networks.stylegan import (
    STYLEGAN_CONFIGS,
    Blur,
    ConstantInput,
    InstanceNorm,
    NoiseInjection,
    PixelNorm,
    StyleGANConfig,
    StyleModulation,
    TruncationTrick,
    UpscaleConv2D,
    config_from_official,
    load_official,
    official_variables,
    stylegan,
    stylegan_config,
)

SMALL = StyleGANConfig(
    resolution=32, fmap_base=256, fmap_max=64, latent_size=32, dlatent_size=32, mapping_fmaps=32
)
# 128x128 with few channels: the 128x128 upscaling convolution is the fused one ("auto").
SMALL_128 = StyleGANConfig(
    resolution=128,
    fmap_base=64,
    fmap_max=16,
    latent_size=16,
    dlatent_size=16,
    mapping_fmaps=16,
    mapping_layers=3,
)


def nchw(x):
    return np.transpose(np.asarray(x, np.float64), (0, 3, 1, 2))


def nhwc(x):
    return np.transpose(np.asarray(x, np.float64), (0, 2, 3, 1))


def random_official(config, seed=0):
    """Random arrays named and laid out as the official Gs holds them (stored weights N(0, 1/lrmul^2),
    mapping biases scaled by 1/lrmul, as training with the learning-rate multiplier leaves them)."""
    rng = np.random.default_rng(seed)
    lrmul = config.mapping_lrmul
    arrays = {}
    for name, shape in official_variables(config).items():
        if name.endswith("lod"):
            value = np.zeros(shape)
        elif name.startswith("mapping/"):
            value = rng.standard_normal(shape) * (1.0 if name.endswith("weight") else 0.1) / lrmul
        elif name.endswith("/bias") or name.endswith("Noise/weight"):
            value = 0.1 * rng.standard_normal(shape)
        elif "ToRGB" in name:  # small enough for images in about [-1, 1], as a trained network gives
            value = 0.1 * rng.standard_normal(shape)
        else:  # conv, style, to-RGB weights, the constant, the noise buffers, dlatent_avg
            value = rng.standard_normal(shape)
        arrays[name] = value.astype(np.float32)
    return arrays


@pytest.fixture(scope="module")
def small():
    """The SMALL network with random official weights: (model, arrays)."""
    arrays = random_official(SMALL)
    return load_official(stylegan(SMALL), arrays), arrays


# ---------------------------------------------------------------------------------------------------------
# Layers against their formulas


def test_pixel_norm_matches_formula():
    x = np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)
    expected = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(PixelNorm()(x), expected, rtol=1e-5)


def test_constant_input_repeats_over_the_batch():
    layer = ConstantInput(5)
    layer(np.zeros((1, 8), np.float32))
    const = np.random.default_rng(0).standard_normal((1, 4, 4, 5)).astype(np.float32)
    layer.const.assign(const)
    out = layer(np.zeros((3, 8), np.float32)).numpy()
    assert out.shape == (3, 4, 4, 5)
    np.testing.assert_array_equal(out, np.repeat(const, 3, axis=0))


def test_noise_injection_uses_its_buffer_or_the_given_noise():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8, 5)).astype(np.float32)
    layer = NoiseInjection(8)
    layer(x)
    buffer, scale = rng.standard_normal((1, 8, 8, 1)), rng.standard_normal(5)
    layer.noise.assign(buffer.astype(np.float32))
    layer.scale.assign(scale.astype(np.float32))
    # Official NCHW: x + noise[N, 1, H, W] * weight[1, C, 1, 1].
    expected = nchw(x) + nchw(buffer) * scale[None, :, None, None]
    np.testing.assert_allclose(nchw(layer(x)), expected, atol=1e-5)
    fresh = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)
    expected = nchw(x) + nchw(fresh) * scale[None, :, None, None]
    np.testing.assert_allclose(nchw(layer(x, fresh)), expected, atol=1e-5)


def test_instance_norm_matches_formula():
    x = (np.random.default_rng(2).standard_normal((2, 6, 6, 4)) * 3 + 1).astype(np.float32)
    np.testing.assert_allclose(nchw(InstanceNorm()(x)), ref.instance_norm(nchw(x)), atol=1e-5)


def test_style_modulation_matches_formula():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 4, 5)).astype(np.float32)
    w = rng.standard_normal((2, 8)).astype(np.float32)
    layer = StyleModulation(5)
    layer(x, w)
    weight, bias = rng.standard_normal((8, 10)), rng.standard_normal(10)
    layer.dense.kernel.assign((weight / np.sqrt(8)).astype(np.float32))  # StyleMod gain 1, use_wscale
    layer.dense.bias.assign(bias.astype(np.float32))
    np.testing.assert_allclose(nchw(layer(x, w)), ref.style_mod(nchw(x), w, weight, bias), atol=1e-5)


def test_conv_and_to_rgb_match_formula(small):
    model, _ = small
    rng = np.random.default_rng(4)
    conv = model.synthesis.get_layer("8x8_conv1").conv  # 3x3, 'SAME', no bias
    x = rng.standard_normal((2, 8, 8, conv.kernel.shape[2])).astype(np.float32)
    np.testing.assert_allclose(nchw(conv(x)), ref.conv2d(nchw(x), conv.kernel.numpy()), atol=1e-4)
    to_rgb = model.synthesis.get_layer("to_rgb")  # 1x1 + bias
    x = rng.standard_normal((2, 32, 32, to_rgb.kernel.shape[2])).astype(np.float32)
    expected = ref.conv2d(nchw(x), to_rgb.kernel.numpy()) + to_rgb.bias.numpy()[None, :, None, None]
    np.testing.assert_allclose(nchw(to_rgb(x)), expected, atol=1e-5)


def _upscale(fused, kernel, x):
    layer = UpscaleConv2D(kernel.shape[-1], fused)
    layer(x)
    layer.kernel.assign(kernel)
    return layer(x).numpy()


def test_upsample_then_conv_matches_formula():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    out = _upscale(False, kernel, x)
    assert out.shape == (2, 10, 12, 4)
    np.testing.assert_allclose(nchw(out), ref.conv2d(ref.upscale2d(nchw(x)), kernel), atol=1e-4)


def test_fused_upscale_conv_matches_the_transposed_convolution():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    fused = _upscale(True, kernel, x)
    assert fused.shape == (2, 10, 12, 4)
    np.testing.assert_allclose(nchw(fused), ref.fused_upscale_conv(nchw(x), kernel), atol=1e-4)
    # The fused op is upsample-then-conv with the kernel rotated by 180 degrees (exactly, borders
    # included), and not with the same kernel: fused and unfused networks are different functions.
    np.testing.assert_allclose(fused, _upscale(False, kernel[::-1, ::-1].copy(), x), atol=1e-4)
    assert np.abs(fused - _upscale(False, kernel, x)).max() > 0.1


def test_blur_matches_formula():
    x = np.random.default_rng(7).standard_normal((2, 6, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(nchw(Blur()(x)), ref.blur(nchw(x)), atol=1e-5)
    # A constant image stays constant away from the zero-padded border.
    assert np.allclose(Blur()(np.ones((1, 6, 6, 1), np.float32)).numpy()[0, 1:-1, 1:-1], 1.0)


def test_truncation_matches_formula():
    rng = np.random.default_rng(8)
    layer = TruncationTrick(6, psi=0.7, cutoff=4)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    layer(w)
    avg = rng.standard_normal(5).astype(np.float32)
    layer.w_avg.assign(avg)
    np.testing.assert_allclose(layer(w), ref.truncate(w, avg, 6, 0.7, 4), atol=1e-6)
    np.testing.assert_allclose(layer(w, psi=0.3, cutoff=2), ref.truncate(w, avg, 6, 0.3, 2), atol=1e-6)
    wplus = rng.standard_normal((3, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(layer(wplus), ref.truncate(wplus, avg, 6, 0.7, 4), atol=1e-6)
    np.testing.assert_allclose(layer(wplus, psi=1.0), wplus, atol=1e-6)
    everywhere = TruncationTrick(6, psi=0.0, cutoff=None)  # cutoff None: all layers; its w_avg is 0
    np.testing.assert_array_equal(everywhere(w), np.zeros((3, 6, 5), np.float32))


def test_mapping_folds_the_learning_rate_multiplier(small):
    model, arrays = small
    z = np.random.default_rng(9).standard_normal((4, SMALL.latent_size)).astype(np.float32)
    np.testing.assert_allclose(
        model.map(z), ref.mapping(arrays, z, SMALL.mapping_lrmul), rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------------------------------------------------------
# Whole networks against the numpy forward


@pytest.mark.parametrize("config", [SMALL, SMALL_128], ids=["32", "128-fused"])
def test_network_matches_numpy_forward(config):
    arrays = random_official(config, seed=10)
    model = load_official(stylegan(config), arrays)
    z = np.random.default_rng(11).standard_normal((2, config.latent_size)).astype(np.float32)
    expected = ref.generate(arrays, z, psi=config.truncation_psi, cutoff=config.truncation_cutoff)
    images = model(z).numpy()
    assert images.shape == (2, config.resolution, config.resolution, 3) and images.dtype == np.float32
    assert 0.3 < np.abs(expected).max() < 4
    np.testing.assert_allclose(nchw(images), expected, rtol=0, atol=1e-5)


def test_128_network_uses_the_fused_convolution_only_at_128():
    model = stylegan(SMALL_128)
    fused = {r: model.synthesis.get_layer(f"{r}x{r}_conv0_up").conv.fused for r in (8, 16, 32, 64, 128)}
    assert fused == {8: False, 16: False, 32: False, 64: False, 128: True}


def test_same_latents_same_images_and_random_noise_differs(small):
    model, arrays = small
    z = np.random.default_rng(12).standard_normal((2, SMALL.latent_size)).astype(np.float32)
    np.testing.assert_array_equal(model(z).numpy(), model(z).numpy())
    wplus = model.truncate(model.map(z))
    fixed = model.synthesize(wplus).numpy()
    seeded = model.synthesize(wplus, randomize_noise=True, seed=3).numpy()
    np.testing.assert_array_equal(seeded, model.synthesize(wplus, randomize_noise=True, seed=3).numpy())
    assert np.abs(seeded - fixed).max() > 1e-3
    assert np.abs(seeded - model.synthesize(wplus, randomize_noise=True, seed=4).numpy()).max() > 1e-3
    # The random path is the same network: given the buffers as noise it reproduces the fixed images.
    noises = [arrays[f"synthesis/noise{i}"] for i in range(SMALL.num_layers)]
    expected = ref.synthesis(
        arrays, np.asarray(wplus, np.float64), noises=[np.repeat(n, 2, 0) for n in noises]
    )
    np.testing.assert_allclose(nchw(fixed), expected, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# The official variable table and the loader


def test_official_variables_of_ffhq():
    variables = official_variables(stylegan_config("ffhq"))
    # Gs: lod, dlatent_avg; synthesis: lod, 18 noise buffers, 18 layers x 5, ToRGB_lod0..8 x 2;
    # mapping: Dense0..7 x 2.
    assert len(variables) == 2 + 1 + 18 + 18 * 5 + 9 * 2 + 8 * 2
    assert [n for n in variables if re.fullmatch(r"synthesis/noise\d+", n)] == [
        f"synthesis/noise{i}" for i in range(18)
    ]
    assert variables["synthesis/noise17"] == (1, 1, 1024, 1024)
    assert sorted(n for n in variables if n.endswith("/bias") and "ToRGB" in n) == sorted(
        f"synthesis/ToRGB_lod{k}/bias" for k in range(9)
    )
    assert all(variables[f"mapping/Dense{i}/weight"] == (512, 512) for i in range(8))
    # nf(stage) = min(8192 / 2^stage, 512): 1024x1024 has nf(9) = 16 channels from nf(8) = 32.
    assert variables["synthesis/1024x1024/Conv0_up/weight"] == (3, 3, 32, 16)
    assert variables["synthesis/4x4/Const/const"] == (1, 512, 4, 4)
    assert variables["synthesis/64x64/Conv0_up/StyleMod/weight"] == (512, 512)
    assert variables["synthesis/ToRGB_lod0/weight"] == (1, 1, 16, 3)
    assert list(variables)[:3] == ["lod", "dlatent_avg", "synthesis/lod"]


def test_ffhq_model_has_the_official_trainable_parameters():
    model = stylegan("ffhq")
    variables = official_variables(model.config)
    untrainable = {"lod", "synthesis/lod", "dlatent_avg"} | {f"synthesis/noise{i}" for i in range(18)}
    official = sum(int(np.prod(s)) for n, s in variables.items() if n not in untrainable)
    assert official == 26_219_627  # what the official Gs.print_layers() reports for FFHQ
    unused_to_rgb = sum(
        int(np.prod(s)) for n, s in variables.items() if re.match(r"synthesis/ToRGB_lod[1-8]/", n)
    )
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == official - unused_to_rgb
    fused = [
        r
        for r in (8, 16, 32, 64, 128, 256, 512, 1024)
        if model.synthesis.get_layer(f"{r}x{r}_conv0_up").conv.fused
    ]
    assert fused == [128, 256, 512, 1024]
    images = model(np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)).numpy()
    assert images.shape == (1, 1024, 1024, 3) and np.all(np.isfinite(images))


def test_load_official_errors(small):
    model, arrays = small
    missing = {k: v for k, v in arrays.items() if k != "synthesis/8x8/Conv1/bias"}
    with pytest.raises(WeightsError, match=r"missing \(1\): synthesis/8x8/Conv1/bias"):
        load_official(model, missing)
    with pytest.raises(WeightsError, match=r"unknown \(1\): synthesis/Extra/weight"):
        load_official(model, {**arrays, "synthesis/Extra/weight": np.zeros(3, np.float32)})
    wrong = {**arrays, "mapping/Dense0/weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(
        WeightsError, match=r"wrong shape \(1\): mapping/Dense0/weight \(3, 3\) \(expected \(32, 32\)\)"
    ):
        load_official(model, wrong)
    with pytest.raises(WeightsError, match=r"fully grown.*Received: synthesis/lod=1.0"):
        load_official(model, {**arrays, "synthesis/lod": np.float32(1.0)})
    with pytest.raises(WeightsError, match=r"Received: lod=2.0"):
        load_official(model, {**arrays, "lod": np.float32(2.0)})


def test_config_from_official_infers_the_architecture():
    assert config_from_official(random_official(SMALL)) == SMALL
    assert config_from_official(random_official(SMALL_128)) == SMALL_128
    # FFHQ from shapes alone (zero-stride views, no memory) and the pickle's static kwargs.
    ffhq = {
        n: np.broadcast_to(np.float32(0), s) for n, s in official_variables(stylegan_config("ffhq")).items()
    }
    static = {"num_channels": 3, "resolution": 1024, "label_size": 0, "structure": "recursive"}
    assert config_from_official(ffhq, static) == STYLEGAN_CONFIGS["ffhq"]
    taken = config_from_official(ffhq, {"fused_scale": False, "truncation_psi": 0.5, "mapping_lrmul": 0.1})
    assert (taken.fused_scale, taken.truncation_psi, taken.mapping_lrmul) == (False, 0.5, 0.1)
    assert config_from_official(ffhq, {"truncation_psi": None}).truncation_psi == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"use_noise": False}, r"use_noise=True.*Received: use_noise=False"),
        ({"label_size": 10}, r"Received: label_size=10"),
        ({"nonlinearity": "relu"}, r"Received: nonlinearity='relu'"),
        ({"use_pixel_norm": True}, r"Received: use_pixel_norm=True"),
        ({"blur_filter": None}, r"Received: blur_filter=None"),
        ({"blur_filter": [1, 3, 3, 1]}, r"Received: blur_filter=\[1, 3, 3, 1\]"),
        ({"structure": "progressive"}, r"Received: structure='progressive'"),
        ({"resolution": 512}, r"contradicts.*resolution=1024. Received: resolution=512"),
        ({"mystery": 1}, r"Unknown StyleGAN static kwarg. Received: mystery=1"),
    ],
)
def test_config_from_official_refuses_other_architectures(kwargs, match):
    arrays = {
        n: np.broadcast_to(np.float32(0), s) for n, s in official_variables(stylegan_config("ffhq")).items()
    }
    with pytest.raises(WeightsError, match=match):
        config_from_official(arrays, kwargs)


def test_config_from_official_refuses_channel_counts_no_fmap_base_gives():
    arrays = random_official(SMALL)
    arrays["synthesis/16x16/Conv1/bias"] = np.zeros(40, np.float32)  # SMALL has 32 there
    with pytest.raises(WeightsError, match=r"No fmap_base/fmap_max"):
        config_from_official(arrays)


def test_config_validation():
    with pytest.raises(ValueError, match=r"Received: resolution=100"):
        StyleGANConfig(resolution=100)
    with pytest.raises(ValueError, match=r"Received: fused_scale='yes'"):
        StyleGANConfig(resolution=64, fused_scale="yes")
    with pytest.raises(ValueError, match=r"Received: truncation_cutoff=-1"):
        StyleGANConfig(resolution=64, truncation_cutoff=-1)
    with pytest.raises(ValueError, match=r"Received: name='cats'. Known: ffhq"):
        stylegan_config("cats")
    with pytest.raises(ValueError, match=r"Unknown StyleGANConfig keys. Received: \['colour'\]"):
        StyleGANConfig.from_dict({"resolution": 64, "colour": 1})
    assert StyleGANConfig.from_dict(SMALL.to_dict()) == SMALL
    ffhq = stylegan_config("ffhq")
    assert ffhq.num_layers == 18 and [ffhq.nf(s) for s in range(1, 10)] == [512] * 4 + [256, 128, 64, 32, 16]


# ---------------------------------------------------------------------------------------------------------
# The LatentGenerator wrapper


def test_generator_contract(small):
    model, _ = small
    generator = StyleGANGenerator(model, name="small")
    assert (generator.latent_space, generator.latent_size, generator.z_size) == ("w", 32, 32)
    assert generator.truncation.psi == 0.7 and generator.truncation.cutoff == 8
    w = generator.sample(3, seed=5)
    np.testing.assert_array_equal(w, generator.sample(3, seed=5))
    assert w.shape == (3, 32) and w.dtype == np.float32
    images = generator.synthesize(w).numpy()
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0.01
    raw = model.synthesize(model.truncate(w)).numpy()
    np.testing.assert_allclose(images, np.clip((raw + 1) / 2, 0, 1), atol=1e-6)
    wplus = model.truncate(w, psi=1.0).numpy()  # w broadcast to every layer, untruncated
    np.testing.assert_allclose(generator.synthesize(wplus), images, atol=1e-5)
    with pytest.raises(AdvfaceError, match=r"Received: latents.shape=\(3, 7\)"):
        generator.synthesize(np.zeros((3, 7), np.float32))


def test_generator_gradient_wrt_w_is_nonzero(small):
    generator = StyleGANGenerator(small[0])
    w = tf.Variable(generator.sample(2, seed=1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(generator.synthesize(w) ** 2)
    grad = tape.gradient(loss, w).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_generator_without_truncation_is_plain_synthesis(small):
    model, arrays = small
    plain = load_official(stylegan(StyleGANConfig(**{**SMALL.to_dict(), "truncation_psi": 1.0})), arrays)
    generator = StyleGANGenerator(plain)
    w = generator.sample(2, seed=2)
    untruncated = plain.synthesis(np.repeat(w[:, None], SMALL.num_layers, axis=1)).numpy()
    np.testing.assert_array_equal(generator.synthesize(w).numpy(), np.clip((untruncated + 1) / 2, 0, 1))


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, loading the wrong file on purpose
def test_saved_stylegan_round_trip(small, models):
    model, _ = small
    assert not stylegan_ffhq_available()
    savedmodels.store(
        model, "stylegan-small", origin="test", command="test", meta={"config": SMALL.to_dict()}
    )
    generator = from_saved("stylegan-small")
    w = generator.sample(2, seed=3)
    expected = StyleGANGenerator(model).synthesize(w).numpy()
    np.testing.assert_array_equal(generator.synthesize(w).numpy(), expected)
    np.testing.assert_array_equal(generator.model.w_avg.numpy(), model.w_avg.numpy())
    path = savedmodels.weights_file("stylegan-small")
    np.testing.assert_array_equal(stylegan(SMALL, weights=path)(w[:, :32]).numpy(), model(w[:, :32]).numpy())
    with pytest.raises(WeightsError, match=r"does not hold weights of this StyleGAN"):
        stylegan(SMALL_128, weights=path)
    savedmodels.write_metadata("stylegan-small", {})
    with pytest.raises(WeightsError, match=r"No StyleGAN configuration for stylegan-small"):
        from_saved("stylegan-small")
