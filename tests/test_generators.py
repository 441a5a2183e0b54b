"""The generator registry and the offline default ``digiface-dcgan`` against the package's own PyTorch net."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from advface.assets import package_file
from advface.errors import AdvfaceError, WeightsError
from advface.generators import GENERATORS, get_generator_spec, load_generator

# gan-face-generate is installed by `make setup` (pip install --no-deps): without it these tests fail.


@pytest.fixture(scope="module")
def digiface():
    return load_generator("digiface-dcgan")


def test_digiface_matches_the_packages_torch_generator(digiface):
    import torch
    from gan_face_generate.models import Generator  # the package's own module (imports only torch)

    net = Generator(0, 3, 100, 64)
    state = torch.load(
        package_file("gan-face-generate", "weights.tar"), map_location="cpu", weights_only=True
    )
    net.load_state_dict(state["netG_state_dict"])
    net.eval()
    z = digiface.sample(12, seed=5)
    with torch.no_grad():
        reference = net(torch.from_numpy(z)[:, :, None, None]).numpy().transpose(0, 2, 3, 1)
    ours = digiface.model(z, training=False).numpy()
    assert np.abs(ours - reference).max() < 1e-5
    # synthesize() is the same picture in [0, 1].
    images = digiface.synthesize(z).numpy()
    np.testing.assert_allclose(images, np.clip((reference + 1) / 2, 0, 1), atol=1e-5)
    # A broken port (kernel not transposed in space) is caught by this bar.
    assert np.abs(ours[..., ::-1, :] - reference).max() > 1e-2


def test_digiface_interface(digiface):
    assert (digiface.name, digiface.latent_size, digiface.latent_space, digiface.resolution) == (
        "digiface-dcgan",
        100,
        "z",
        64,
    )
    assert not digiface.has_mapping and digiface.truncation is None
    z = digiface.sample(3, seed=1)
    assert z.shape == (3, 100) and z.dtype == np.float32
    np.testing.assert_array_equal(z, digiface.sample(3, seed=1))
    assert not np.array_equal(z, digiface.sample(3, seed=2))
    images = digiface.synthesize(z)
    assert images.shape == (3, 64, 64, 3) and images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    # Inference mode: an image does not depend on the rest of its batch.
    np.testing.assert_allclose(digiface.synthesize(z[:1]).numpy()[0], images.numpy()[0], atol=1e-6)
    # Differentiable with respect to the latents.
    latents = tf.Variable(z)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(digiface.synthesize(latents))
    grad = tape.gradient(loss, latents)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
    # Batched rendering equals one call.
    np.testing.assert_allclose(digiface.images(z, batch_size=2), images.numpy(), atol=1e-6)


def test_latent_errors_say_what_was_expected(digiface):
    with pytest.raises(AdvfaceError, match=r"Received: latents.shape=\(2, 99\)"):
        digiface.images(np.zeros((2, 99)))
    with pytest.raises(AdvfaceError, match="NaN"):
        digiface.images(np.full((1, 100), np.nan))
    with pytest.raises(AdvfaceError, match="Received: n=0"):
        digiface.sample(0)
    with pytest.raises(AdvfaceError, match="Known: digiface-dcgan, stylegan-ffhq"):
        get_generator_spec("stylegan3")


def test_registry_describes_training_data_and_licence():
    spec = GENERATORS["digiface-dcgan"]
    assert "DigiFace-1M" in spec.trained_on and "MIT" in spec.licence and "non-commercial" in spec.licence
    assert (
        GENERATORS["stylegan-ffhq"].convert is not None and "FFHQ" in GENERATORS["stylegan-ffhq"].trained_on
    )


def test_a_tampered_weights_file_is_refused(tmp_path):
    from advface.networks.digiface_dcgan import digiface_generator

    bad = tmp_path / "weights.tar"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        digiface_generator(weights=bad)


def test_advface_imports_without_torch_or_gan_face_generate_code():
    # advface reads the package's file; it never imports the package (which needs torch) or torch.
    code = (
        "import sys; from advface.generators import load_generator; g = load_generator('digiface-dcgan'); "
        "g.images(g.sample(1)); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', "
        "'gan_face_generate')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
