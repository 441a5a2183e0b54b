"""Files in Keras 2's HDF5 layout, written with h5py as TF 2.4's ``hdf5_format`` wrote agns-port's models.

``save_model_to_hdf5``: ``model_weights`` with ``layer_names``; one group per top-level layer with
``weight_names``; nested-model weights listed trainable first; auto-generated layer names from global
counters. Used by the converter tests (no Keras 2 is installed to write real ones).
"""

import json

import h5py
import keras
import numpy as np

from advface.networks.openface import InceptionModule, InceptionModuleShrink

# ---------------------------------------------------------------------------------------------------------
# A Keras 2 writer, as TF 2.4's hdf5_format.save_model_to_hdf5 / save_weights_to_hdf5_group lay files out

# Layers agns-port named; every other layer got a counter name (conv2d_17, batch_normalization_3, dense).
SOURCE_NAMED = {"First_Conv2D", "Inception_2_Conv2D", "Fully_Connected", "Logits"}
# The attribute order of the source's InceptionModule / InceptionModuleShrink __init__.
SOURCE_SUBLAYERS = {
    InceptionModule: ["reduce_conv_out", "rco_bn", "reduce_3", "r3_bn", "out_3", "o3_bn",
                      "reduce_5", "r5_bn", "out_5", "o5_bn", "pool", "pool_out", "po_bn"],
    InceptionModuleShrink: ["reduce3", "r3_bn", "conv3", "c3_bn", "reduce5", "r5_bn", "conv5", "c5_bn",
                            "pool"],
}  # fmt: skip
KERAS2_CLASS_NAMES = {
    "Conv2D": "conv2d",
    "BatchNormalization": "batch_normalization",
    "Dense": "dense",
    "ReLU": "re_lu",
    "MaxPooling2D": "max_pooling2d",
    "AveragePooling2D": "average_pooling2d",
    "LocalResponseNormalization": "local_response_normalization",
    "L2Normalization": "l2_normalization",
    "L2Pooling": "l2_pooling",
}


class Counters:
    """Keras 2's backend.unique_object_name: per class, 'conv2d', 'conv2d_1', ... in creation order. The
    counters start where an earlier model of the same training session left them."""

    def __init__(self, start: dict[str, int]):
        self.next = dict(start)

    def name(self, layer) -> str:
        base = KERAS2_CLASS_NAMES[type(layer).__name__]
        n = self.next.get(base, 0)
        self.next[base] = n + 1
        return base if n == 0 else f"{base}_{n}"


def keras2_vars(layer, prefix: str) -> list[tuple[str, keras.Variable]]:
    return [(f"{prefix}/{v.name}:0", v) for v in layer.weights]


def openface_source_layout(model, counters: Counters) -> tuple[list[tuple], list[tuple]]:
    """The base's top-level layers ``[(keras 2 name, [(weight name, variable)])]`` and the head's weights.

    Walks our model in the source's creation order and names what the source did not name with counters.
    """
    base, head = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            base.append(("input_1", []))
        elif layer.name in ("Fully_Connected", "Logits"):
            head += keras2_vars(layer, layer.name)
        elif type(layer) in SOURCE_SUBLAYERS:
            weights = []
            for attribute in SOURCE_SUBLAYERS[type(layer)]:
                sub = getattr(layer, attribute, None)
                if sub is not None:
                    weights += keras2_vars(sub, f"{layer.name}/{counters.name(sub)}")
            base.append((layer.name, weights))
        elif type(layer).__name__ == "Rescaling":
            continue  # ours: the source fed [-1, 1] images
        else:
            name = (
                layer.name if layer.name in SOURCE_NAMED or layer.name == "reshape" else counters.name(layer)
            )
            base.append((name, keras2_vars(layer, name)))
    return base, head


def trainable_first(weights):
    """Keras 2 _legacy_weights: trainable variables, then the non-trainable ones (BN moving statistics)."""
    return [w for w in weights if w[1].trainable] + [w for w in weights if not w[1].trainable]


def write_keras2(path, groups, *, full_model=True, chunks=1):
    """``groups``: ``[(top-level layer name, [(weight name, array)])]`` in ``layer_names`` order.

    ``chunks`` > 1 splits each ``weight_names`` into ``weight_names0``, ``weight_names1``, ... as Keras 2
    does for attributes over the 64 KB HDF5 header limit.
    """
    as_bytes = lambda names: np.array([n.encode("utf8") for n in names]) if names else np.asarray([])  # noqa: E731
    with h5py.File(path, "w") as f:
        root = f
        if full_model:
            f.attrs["keras_version"] = b"2.4.0"
            f.attrs["backend"] = b"tensorflow"
            config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
                {"class_name": "Functional" if i == 0 else "Sequential", "config": {"name": name}}
                for i, (name, _) in enumerate(groups)
            ]}}  # fmt: skip
            f.attrs["model_config"] = json.dumps(config).encode("utf8")
            f.attrs["training_config"] = json.dumps({"loss": "categorical_crossentropy"}).encode("utf8")
            f.create_dataset("optimizer_weights/Adam/iter:0", data=np.int64(1234))
            root = f.create_group("model_weights")
        root.attrs["layer_names"] = as_bytes([name for name, _ in groups])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.4.0"
        for name, weights in groups:
            group = root.create_group(name)
            names = [w for w, _ in weights]
            if chunks > 1 and names:
                for i, chunk in enumerate(np.array_split(as_bytes(names), chunks)):
                    group.attrs[f"weight_names{i}"] = chunk
            else:
                group.attrs["weight_names"] = as_bytes(names)
            for weight_name, value in weights:
                group.create_dataset(weight_name, data=value)


def randomise(model, seed):
    """Non-trivial values for every variable (biases, BN statistics included)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if v.name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif v.name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif v.name == "kernel":
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0, 0.1, shape)
        v.assign(value.astype(np.float32))


def write_source_openface(model, path, head: str = "OF10_head") -> None:
    """``model`` (an ``openface10/143``) saved the way agns-port's ``model.save`` wrote ``of10.h5``:
    Sequential([Openface_NN4.Small2.v1, <head>]) with counters left by an earlier model of the session."""
    base, head_weights = openface_source_layout(model, Counters({"conv2d": 17, "batch_normalization": 3}))
    base_weights = trainable_first([w for _, weights in base for w in weights])
    groups = [("Openface_NN4.Small2.v1", base_weights), (head, trainable_first(head_weights))]
    write_keras2(path, [(g, [(name, v.numpy()) for name, v in weights]) for g, weights in groups])
