"""The AGN VGG10 / VGG143 face classifiers of agns-port: ImageNet VGG16 up to ``fc2`` plus a logits layer.

References: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (VGG16); M. Sharif et al., "A General Framework for Adversarial Examples with
Objectives", ACM TOPS 2019 (the VGG10 / VGG143 classifiers). The original AGN models were built on
VGG-Face; the agns-port re-implementation (``networks/face_nets.py``, ``reference/algorithms.md`` section
1.3) fine-tuned a ``Logits`` layer on a frozen ImageNet VGG16 instead, and this is that network:

    input 224x224 RGB in [0, 1] -> block1_conv1 ... block5_pool -> flatten -> fc1 (4096) -> fc2 (4096)
    -> Logits (10 | 143)

The layer names are keras.applications' (``block1_conv1`` ... ``fc1``, ``fc2``) and the source's
(``Logits``). The model returns **logits**; the source appended a Softmax (``Simplex``), so
``softmax(model(x))`` is its output.

The input is fed to the first convolution **as is**, float32 RGB in ``[0, 1]``: agns-port trained its
head on ImageNet VGG16 without ``keras.applications.vgg16.preprocess_input`` (no BGR swap, no mean
subtraction, no 0..255 scale; bug 1.9.12). Its weights only compute what they were trained to compute on
that input, so we keep it; do not add ``preprocess_input`` in front of this model.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

INPUT_SIZE = 224
DESCRIPTOR_SIZE = 4096
CLASSES = (10, 143)


def build_vgg_classifier(classes: int) -> keras.Model:
    """VGG10 or VGG143 with fresh (random) weights; :func:`vgg10` / :func:`vgg143` load weights."""
    if classes not in CLASSES:
        raise ValueError(f"The AGN VGG classifiers have 10 or 143 classes. Received: classes={classes!r}.")
    vgg16 = keras.applications.VGG16(include_top=True, weights=None, input_shape=(INPUT_SIZE, INPUT_SIZE, 3))
    descriptor = vgg16.get_layer("fc2").output
    logits = layers.Dense(classes, name="Logits")(descriptor)
    return keras.Model(vgg16.input, logits, name=f"vgg{classes}")


def _vgg(classes: int, weights: str | Path | None) -> keras.Model:
    from advface.networks.keras2_h5 import load_weights

    return load_weights(build_vgg_classifier(classes), weights, f"vgg{classes}")


def vgg10(weights: str | Path | None = None) -> keras.Model:
    """The AGN VGG10 classifier: aligned 224x224 RGB in ``[0, 1]`` (no preprocessing) -> 10 logits.

    Args:
        weights: ``None`` (random), a zoo name (``"vgg10"``), a ``.weights.h5`` file saved from this
            model, or the source project's Keras 2 ``vgg_10.h5``.

    Returns:
        A ``keras.Model`` mapping ``(N, 224, 224, 3)`` float32 in ``[0, 1]`` to ``(N, 10)`` logits.
    """
    return _vgg(10, weights)


def vgg143(weights: str | Path | None = None) -> keras.Model:
    """The AGN VGG143 classifier: aligned 224x224 RGB in ``[0, 1]`` -> 143 logits (see :func:`vgg10`)."""
    return _vgg(143, weights)
