"""The DigiFace DCGAN generator of ``gan-face-generate`` 1.1.1, rebuilt in Keras 3 and read without torch.

The package ships ``gan_face_generate/weights.tar``, a ``torch.save`` zip (not a tar) holding
``netG_state_dict``: the PyTorch DCGAN tutorial's generator (Radford et al., ICLR 2016) trained on
DigiFace-1M synthetic faces. advface reads it with :mod:`advface.networks.torch_pickle` (nothing in the
file is executed) and assigns it through a name table (:mod:`advface.networks.torch_convert`): Keras
layers carry the torch module names (``main.0`` ...), and any unknown, missing or mis-shaped tensor is an
error.

==========  ===================================================================  =========
layer       torch (``nn.Sequential main``)                                       output
==========  ===================================================================  =========
main.0      ConvTranspose2d(100, 512, 4, stride 1, padding 0, no bias)           4x4x512
main.1      BatchNorm2d(512, eps 1e-5), ReLU                                     4x4x512
main.3-4    ConvTranspose2d(512, 256, 4, 2, 1), BatchNorm2d, ReLU                8x8x256
main.6-7    ConvTranspose2d(256, 128, 4, 2, 1), BatchNorm2d, ReLU                16x16x128
main.9-10   ConvTranspose2d(128, 64, 4, 2, 1), BatchNorm2d, ReLU                 32x32x64
main.12     ConvTranspose2d(64, 3, 4, 2, 1), tanh                                64x64x3
==========  ===================================================================  =========

3,576,704 trainable parameters plus 1,920 batch-norm moving statistics (the state dict's 3,578,628 numbers
also count four ``num_batches_tracked`` counters). A torch ``ConvTranspose2d``
kernel ``(in, out, kh, kw)`` is Keras' ``(kh, kw, out, in)``; torch's padding 1 with kernel 4 and stride 2
is Keras' ``"same"`` (one row each side), and padding 0 with stride 1 is ``"valid"``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from advface.networks.torch_convert import BN_TENSORS, Target, assign_state, same

LATENT_DIM = 100
RESOLUTION = 64
_WIDTHS = (512, 256, 128, 64)


def _transpose_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # torch (in, out, kh, kw) -> keras (kh, kw, out, in)


def digiface_generator(*, weights: str | None = "digiface-dcgan") -> keras.Model:
    """The DigiFace DCGAN generator: z ``(N, 100)`` -> images float32 ``(N, 64, 64, 3)`` in ``[-1, 1]``.

    Args:
        weights: ``"digiface-dcgan"`` (read from the installed gan-face-generate wheel), a path to a
            ``torch.save`` file holding the same state dict, or None (random initialisation).
    """
    z = keras.Input((LATENT_DIM,), name="z")
    x = layers.Reshape((1, 1, LATENT_DIM), name="to_map")(z)
    index = 0
    for i, width in enumerate(_WIDTHS):
        x = layers.Conv2DTranspose(
            width,
            4,
            strides=1 if i == 0 else 2,
            padding="valid" if i == 0 else "same",
            use_bias=False,
            name=f"main.{index}",
        )(x)
        x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"main.{index + 1}")(x)
        x = layers.ReLU(name=f"main.{index + 2}")(x)
        index += 3
    x = layers.Conv2DTranspose(3, 4, strides=2, padding="same", use_bias=False, name=f"main.{index}")(x)
    images = layers.Activation("tanh", name=f"main.{index + 1}")(x)
    model = keras.Model(z, images, name="digiface_dcgan")
    if weights is not None:
        load_torch_weights(model, weights)
    return model


def _table(model: keras.Model) -> tuple[dict[str, Target], set[str]]:
    table, ignored = {}, set()
    for layer in model.layers:
        shapes = [tuple(w.shape) for w in layer.weights]
        if isinstance(layer, layers.Conv2DTranspose):
            h, w, o, i = shapes[0]
            table[f"{layer.name}.weight"] = Target(layer.name, 0, (i, o, h, w), _transpose_kernel)
        elif isinstance(layer, layers.BatchNormalization):
            for tensor, position in BN_TENSORS.items():
                table[f"{layer.name}.{tensor}"] = Target(layer.name, position, shapes[position], same)
            ignored.add(f"{layer.name}.num_batches_tracked")
        else:
            assert not layer.weights, f"no conversion rule for {layer.name}"
    return table, ignored


def load_torch_weights(model: keras.Model, source) -> None:
    """Assign the package's ``netG_state_dict`` (from ``"digiface-dcgan"`` or a file path) to ``model``."""
    from advface.errors import WeightsError
    from advface.networks.torch_pickle import read_torch_file

    if source == "digiface-dcgan":
        from advface.assets import package_file

        source = package_file("gan-face-generate", "weights.tar")
    checkpoint = read_torch_file(source)
    state = checkpoint.get("netG_state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        found = sorted(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise WeightsError(
            f"{source} holds no netG_state_dict, so it is not gan-face-generate's weights file. Received: "
            f"{found}. Reinstall it with `pip install --no-deps gan-face-generate==1.1.1`."
        )
    table, ignored = _table(model)
    assign_state(
        state,
        model,
        table,
        ignored,
        what="gan-face-generate's DCGAN generator (z 100 -> 64x64)",
        advice="Reinstall it with `pip install --no-deps gan-face-generate==1.1.1`.",
    )
