"""Assign a PyTorch state dict to a Keras model whose layers carry the torch module names.

The ported networks (:mod:`advface.networks.iresnet`, :mod:`advface.networks.inception_resnet_v1`) name
each Keras layer after its torch module (``layer1.0.conv1``), so the conversion table is built from the
model itself: every weight-bearing layer contributes its torch tensor names, shapes and layout transform.
Converters fail loudly (house style 7): all unknown, missing and mis-shaped tensors are collected and
reported in one error, and nothing is assigned unless the whole state dict fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from advface.errors import WeightsError


@dataclass(frozen=True)
class Target:
    """Where one source tensor goes: ``layer.weights[index]``, after ``transform``."""

    layer: str
    index: int
    source_shape: tuple[int, ...]
    transform: Callable[[np.ndarray], np.ndarray]


def conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # (O, I, H, W) -> (H, W, I, O)


def linear_kernel(w: np.ndarray) -> np.ndarray:
    return w.T  # (out, in) -> (in, out)


def prelu_alpha(w: np.ndarray) -> np.ndarray:
    return w.reshape(1, 1, -1)  # (C,) -> keras PReLU alpha (1, 1, C) with shared_axes=[1, 2]


def same(w: np.ndarray) -> np.ndarray:
    return w


# Torch BatchNorm tensor -> index in keras BatchNormalization.weights [gamma, beta, moving_mean, moving_var].
BN_TENSORS = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}


def torch_table(model: keras.Model) -> tuple[dict[str, Target], set[str]]:
    """The conversion table of ``model``: ``{torch name: target}``, plus torch names ignored on purpose.

    Rules: Conv2D ``.weight`` (+ ``.bias``); BatchNormalization ``.weight/.bias/.running_mean/
    .running_var`` (``.num_batches_tracked`` ignored: a training counter); PReLU ``.weight``; Dense
    ``.weight`` (+ ``.bias``).
    A weight-bearing layer of another type is a bug in the port (assert).
    """
    table: dict[str, Target] = {}
    ignored: set[str] = set()
    for layer in model.layers:
        name, shapes = layer.name, [tuple(w.shape) for w in layer.weights]
        if isinstance(layer, layers.Conv2D):
            h, w, i, o = shapes[0]
            table[f"{name}.weight"] = Target(name, 0, (o, i, h, w), conv_kernel)
            if layer.use_bias:
                table[f"{name}.bias"] = Target(name, 1, shapes[1], same)
        elif isinstance(layer, layers.BatchNormalization):
            for tensor, index in BN_TENSORS.items():
                table[f"{name}.{tensor}"] = Target(name, index, shapes[index], same)
            ignored.add(f"{name}.num_batches_tracked")
        elif isinstance(layer, layers.PReLU):
            table[f"{name}.weight"] = Target(name, 0, (shapes[0][-1],), prelu_alpha)
        elif isinstance(layer, layers.Dense):
            n_in, n_out = shapes[0]
            table[f"{name}.weight"] = Target(name, 0, (n_out, n_in), linear_kernel)
            if layer.use_bias:
                table[f"{name}.bias"] = Target(name, 1, (n_out,), same)
        else:
            assert not layer.weights, f"no conversion rule for {layer.name} ({type(layer).__name__})"
    return table, ignored


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} (and {len(names) - limit} more)" if len(names) > limit else shown


def assign_state(
    state: dict[str, np.ndarray],
    model: keras.Model,
    table: dict[str, Target],
    ignored: set[str],
    *,
    what: str,
    advice: str,
) -> None:
    """Check ``state`` against ``table`` completely, then assign it to ``model``.

    Args:
        state: ``{torch name: array}``.
        model: the Keras model the table was built from.
        table, ignored: from :func:`torch_table` (possibly adjusted by the caller).
        what: what the state dict should be, for the message ("an insightface iresnet50 backbone").
        advice: what to do about it, for the message.

    Raises:
        WeightsError: naming the unknown, missing and mis-shaped tensors.
    """
    unknown = [k for k in state if k not in table and k not in ignored]
    missing = [k for k in table if k not in state]
    misshaped = [
        f"{k} {tuple(state[k].shape)} (expected {target.source_shape})"
        for k, target in table.items()
        if k in state and tuple(state[k].shape) != target.source_shape
    ]
    if unknown or missing or misshaped:
        problems = []
        if unknown:
            problems.append(f"unknown tensors ({len(unknown)}): {_listing(unknown)}")
        if missing:
            problems.append(f"missing tensors ({len(missing)}): {_listing(missing)}")
        if misshaped:
            problems.append(f"tensors of the wrong shape ({len(misshaped)}): {_listing(misshaped)}")
        raise WeightsError(f"This state dict is not {what}. Received: " + "; ".join(problems) + f". {advice}")
    values: dict[str, list] = {}
    for key, target in table.items():
        layer_values = values.setdefault(target.layer, [None] * len(model.get_layer(target.layer).weights))
        layer_values[target.index] = target.transform(np.asarray(state[key], dtype=np.float32))
    for layer_name, layer_values in values.items():
        assert all(v is not None for v in layer_values), f"{layer_name} not fully covered by the table"
        model.get_layer(layer_name).set_weights(layer_values)
