"""The agns-port face classifiers (OpenFace nn4.small2, OF10/143, VGG10/143) and their Keras 2 converter.

Layer maths are checked against numpy formulas written here; the converter against files this test
writes in Keras 2's HDF5 layout (TF 2.4 ``hdf5_format.save_model_to_hdf5``: ``model_weights``,
``layer_names`` / ``weight_names`` attributes, nested-model weights listed trainable first, auto-generated
layer names from global counters), built from a reference model whose weights the converted one must
reproduce exactly.
"""

import shutil

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras2_layout import (
    Counters,
    openface_source_layout,
    randomise,
    trainable_first,
    write_keras2,
    write_source_openface,
)

from advface.errors import WeightsError
from advface.networks.keras2_h5 import from_keras2_h5
from advface.networks.openface import (
    InceptionModule,
    InceptionModuleShrink,
    L2Normalization,
    L2Pooling,
    LocalResponseNormalization,
    openface10,
    openface143,
)
from advface.networks.vgg import vgg10, vgg143

# ---------------------------------------------------------------------------------------------------------
# Parameter counts (agns-port README; BN moving statistics included, as Keras counts them)


def test_openface_parameter_counts(of10):
    assert of10.count_params() == 3_744_958
    assert openface143().count_params() == 3_821_215


@pytest.mark.slow
def test_vgg_parameter_counts(vgg10_reference):
    assert vgg10_reference.count_params() == 134_301_514
    model = vgg143()
    assert model.count_params() == 134_846_415
    names = [layer.name for layer in model.layers]
    assert names[1:4] == ["block1_conv1", "block1_conv2", "block1_pool"]
    assert names[-3:] == ["fc1", "fc2", "Logits"]


# ---------------------------------------------------------------------------------------------------------
# Layer maths against numpy


def _lrn_numpy(x, depth_radius, bias, alpha, beta):
    out = np.empty_like(x, dtype=np.float64)
    channels = x.shape[-1]
    for d in range(channels):
        lo, hi = max(0, d - depth_radius), min(channels, d + depth_radius + 1)
        sqr_sum = np.sum(x[..., lo:hi].astype(np.float64) ** 2, axis=-1)
        out[..., d] = x[..., d] / (bias + alpha * sqr_sum) ** beta
    return out


@pytest.mark.parametrize("depth_radius, alpha", [(5, 1e-4), (2, 0.05), (0, 0.3)])
def test_local_response_normalization(depth_radius, alpha):
    x = np.random.default_rng(0).normal(0, 3, (2, 4, 5, 16)).astype(np.float32)
    layer = LocalResponseNormalization(depth_radius=depth_radius, bias=1.5, alpha=alpha, beta=0.75)
    ours = np.asarray(layer(x))
    np.testing.assert_allclose(ours, _lrn_numpy(x, depth_radius, 1.5, alpha, 0.75), rtol=1e-5, atol=1e-6)
    tf_lrn = tf.nn.local_response_normalization(x, depth_radius, bias=1.5, alpha=alpha, beta=0.75)
    np.testing.assert_allclose(ours, tf_lrn.numpy(), rtol=1e-5, atol=1e-6)


def _l2_pool_numpy(x, k):
    """sqrt(k*k * mean of x**2 over the k x k window clipped to the image), TF's 'same' average."""
    n, h, w, c = x.shape
    lo = (k - 1) // 2
    out = np.empty((n, h, w, c), np.float64)
    for i in range(h):
        for j in range(w):
            window = x[:, max(0, i - lo) : i - lo + k, max(0, j - lo) : j - lo + k, :].astype(np.float64)
            out[:, i, j, :] = np.sqrt(k * k * np.mean(window**2, axis=(1, 2)))
    return out


@pytest.mark.parametrize("pool_size", [3, 2])
def test_l2_pooling(pool_size):
    x = np.random.default_rng(1).normal(size=(2, 6, 7, 4)).astype(np.float32)
    x[0, :3, :3, :] = 0.0  # windows of zeros: the result is exactly 0 there
    ours = np.asarray(L2Pooling(pool_size)(x))
    np.testing.assert_allclose(ours, _l2_pool_numpy(x, pool_size), rtol=1e-5, atol=1e-6)
    assert np.all(ours[0, :1, :1, :] == 0.0)


def test_l2_pooling_gradient_is_finite_at_zero():
    x = tf.constant(np.pad(np.ones((1, 4, 4, 2), np.float32), [[0, 0], [4, 0], [4, 0], [0, 0]]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(L2Pooling(3)(x))
        source = tf.reduce_sum(tf.sqrt(9 * tf.nn.avg_pool2d(tf.square(x), 3, 1, "SAME")))  # agns-port's
    grad = tape.gradient(ours, x).numpy()
    assert np.isnan(tape.gradient(source, x).numpy()).any()  # why the guard is there
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_l2_normalization_is_per_sample():
    x = np.random.default_rng(2).normal(size=(4, 128)).astype(np.float32)
    x[2] *= 100.0
    layer = L2Normalization()
    batch = np.asarray(layer(x))
    np.testing.assert_allclose(batch, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    for i in range(4):  # one sample's output does not depend on the rest of the batch
        np.testing.assert_allclose(np.asarray(layer(x[i : i + 1]))[0], batch[i], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(layer(np.zeros((1, 3), np.float32))), 0.0)


# ---------------------------------------------------------------------------------------------------------
# Serialisation


@pytest.mark.parametrize(
    "layer",
    [
        LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=1e-3, beta=0.5, name="lrn"),
        L2Pooling(5, name="l2p", trainable=False),
        L2Normalization(axis=[1, 2], epsilon=1e-6, name="l2n"),
        InceptionModule([128, 32], [96, 16, 32, 64], use_l2_pooling=True, name="Inception_3b"),
        InceptionModule([384], [96, 96, 256], name="Inception_5b"),
        InceptionModuleShrink([256, 64], [128, 32], name="Inception_3c"),
    ],
    ids=lambda layer: layer.name,
)
def test_custom_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config
    if isinstance(layer, InceptionModule | InceptionModuleShrink):
        x = np.random.default_rng(3).normal(size=(1, 6, 6, 24)).astype(np.float32)
        assert clone(x).shape == layer(x).shape == layer.compute_output_shape(x.shape)
        assert [v.shape for v in clone.weights] == [v.shape for v in layer.weights]


def test_openface10_keras_file_round_trip(of10, tmp_path):
    path = tmp_path / "of10.keras"
    of10.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(4).random((3, 96, 96, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(of10(x)))
    assert isinstance(loaded.get_layer("Inception_4a"), InceptionModule)
    assert loaded.get_layer("Inception_4a").use_l2_pooling


def test_gradient_wrt_input_is_finite_and_nonzero(of10):
    images = np.random.default_rng(5).random((2, 96, 96, 3), dtype=np.float32)
    images[0, 30:70, 30:70, :] = 0.0  # a black region
    images[1] = 0.0  # an all-black image
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = of10(x, training=False)
        loss = tf.reduce_sum(logits[:, 3]) - tf.reduce_sum(logits[:, 7])
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad))
    assert np.abs(grad[0]).max() > 0 and np.abs(grad[1]).max() > 0


@pytest.fixture(scope="module")
def of10():
    model = openface10()
    randomise(model, seed=10)
    return model


@pytest.fixture(scope="module")
def of10_file(of10, tmp_path_factory):
    """of10.h5 as agns-port's ``model.save`` wrote it: Sequential([Openface_NN4.Small2.v1, OF10_head])."""
    path = tmp_path_factory.mktemp("keras2") / "of10.h5"
    write_source_openface(of10, path)
    return path


def _assert_same_weights(converted, reference):
    ref = {v.path: v for v in reference.weights}
    for v in converted.weights:
        np.testing.assert_array_equal(v.numpy(), ref[v.path].numpy(), err_msg=v.path)


def test_openface10_from_keras2_h5(of10, of10_file):
    with h5py.File(of10_file) as f:  # the writer really produced the Keras 2 layout described above
        names = [n.decode() for n in f["model_weights/Openface_NN4.Small2.v1"].attrs["weight_names"]]
    assert names[0] == "First_Conv2D/kernel:0" and "Inception_3a/conv2d_19/kernel:0" in names
    assert names[-1].endswith("moving_variance:0") and "dense/kernel:0" in names

    converted = from_keras2_h5(of10_file, "openface10")
    assert converted.name == "openface10" and len(converted.weights) == len(of10.weights)
    _assert_same_weights(converted, of10)
    x = np.random.default_rng(6).random((4, 96, 96, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(converted(x)), np.asarray(of10(x)), rtol=0, atol=1e-6)
    assert from_keras2_h5(of10_file).name == "openface10"  # arch inferred
    _assert_same_weights(openface10(weights=of10_file), of10)  # the builder reads Keras 2 files too


def test_openface_base_from_keras2_h5(of10, tmp_path):
    """openface.h5 of pretrain_openface_model: the base alone, one group per layer, own counters."""
    base, _ = openface_source_layout(of10, Counters({"conv2d": 3, "batch_normalization": 40, "dense": 2}))
    path = tmp_path / "openface.h5"
    write_keras2(path, [(name, [(w, v.numpy()) for w, v in trainable_first(ws)]) for name, ws in base])
    converted = from_keras2_h5(path)
    assert converted.name == "openface_base"
    _assert_same_weights(converted, of10)
    embedding = keras.Model(of10.input, of10.get_layer("Embedding").output)
    x = np.random.default_rng(7).random((2, 96, 96, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(converted(x)), np.asarray(embedding(x)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(converted(x)), axis=1), 1.0, rtol=1e-5)


def test_openface143_from_save_weights_file(tmp_path):
    """model.save_weights('of143.h5'): the same groups at the root, no model_config; chunked attributes."""
    reference = openface143()
    randomise(reference, seed=143)
    base, head = openface_source_layout(reference, Counters({}))
    groups = [
        ("Openface_NN4.Small2.v1", trainable_first([w for _, ws in base for w in ws])),
        ("OF143_head", head),
    ]
    path = tmp_path / "of143_weights.h5"
    write_keras2(
        path, [(g, [(n, v.numpy()) for n, v in ws]) for g, ws in groups], full_model=False, chunks=3
    )
    converted = from_keras2_h5(path)
    assert converted.name == "openface143"
    _assert_same_weights(converted, reference)


@pytest.fixture(scope="module")
def vgg10_reference():
    model = vgg10()
    rng = np.random.default_rng(11)
    for layer in model.layers:  # glorot kernels from keras; biases made non-zero so they are checked too
        if layer.weights:
            layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape).astype(np.float32))
    return model


@pytest.mark.slow
def test_vgg10_from_keras2_h5(vgg10_reference, tmp_path):
    """vgg_10.h5: Sequential([VGG_Descriptor (frozen: plain layer order), VGG10_head])."""
    descriptor = [(f"{v.path}:0", v) for layer in vgg10_reference.layers[:-1] for v in layer.weights]
    head = [(f"{v.path}:0", v) for v in vgg10_reference.get_layer("Logits").weights]
    assert descriptor[0][0] == "block1_conv1/kernel:0" and descriptor[-1][0] == "fc2/bias:0"
    path = tmp_path / "vgg_10.h5"
    groups = [("VGG_Descriptor", descriptor), ("VGG10_head", head)]
    write_keras2(path, [(g, [(n, v.numpy()) for n, v in ws]) for g, ws in groups])

    converted = from_keras2_h5(path)  # arch inferred
    assert converted.name == "vgg10"
    _assert_same_weights(converted, vgg10_reference)
    x = np.random.default_rng(8).random((2, 224, 224, 3), dtype=np.float32)
    expected = np.asarray(vgg10_reference(x))
    np.testing.assert_allclose(
        np.asarray(converted(x)), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )
    path.unlink()  # 540 MB


# ---------------------------------------------------------------------------------------------------------
# Errors


def _edit_copy(source, target, edit):
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        edit(f["model_weights/Openface_NN4.Small2.v1"])
    return target


def _drop(layer_prefix: str, count: int):
    def edit(group):
        names = [n.decode() for n in group.attrs["weight_names"]]
        kept = [n for n in names if not n.startswith(layer_prefix)]
        assert len(kept) == len(names) - count
        group.attrs["weight_names"] = np.array([n.encode() for n in kept])
        del group[layer_prefix.rstrip("/")]

    return edit


def test_missing_layer_is_named(of10_file, tmp_path):
    path = _edit_copy(of10_file, tmp_path / "missing.h5", _drop("Inception_2_Conv2D/", 2))
    with pytest.raises(
        WeightsError, match=r"not in the file \(1\): Inception_2_Conv2D: kernel \(1, 1, 64, 64\)"
    ) as info:
        from_keras2_h5(path, "openface10")
    assert "Received: path=" in str(info.value) and "arch='openface10'" in str(info.value)
    # The last auto-named layer of a module (Inception_5b's po_bn, "batch_normalization_<n>" in the file).
    with h5py.File(of10_file) as f:
        names = [n.decode() for n in f["model_weights/Openface_NN4.Small2.v1"].attrs["weight_names"]]
    last_bn = [n for n in names if n.startswith("Inception_5b/batch_normalization")][-1].rsplit("/", 1)[0]
    path = _edit_copy(of10_file, tmp_path / "missing_bn.h5", _drop(last_bn + "/", 4))
    with pytest.raises(
        WeightsError, match=r"Inception_5b/po_bn \(the 4th auto-named batch_normalization in"
    ) as info:
        from_keras2_h5(path, "openface10")
    assert "the file has 3 auto-named batch_normalization layers in Inception_5b, the model 4" in str(
        info.value
    )


def test_misshaped_kernel_is_named(of10_file, tmp_path):
    def resize_first_kernel(group):
        del group["First_Conv2D/kernel:0"]
        group.create_dataset("First_Conv2D/kernel:0", data=np.zeros((5, 5, 3, 64), np.float32))

    path = _edit_copy(of10_file, tmp_path / "misshaped.h5", resize_first_kernel)
    with pytest.raises(
        WeightsError, match=r"First_Conv2D/kernel:0 is \(5, 5, 3, 64\), expected \(7, 7, 3, 64\)"
    ):
        from_keras2_h5(path, "openface10")


def test_unknown_weight_is_named(of10_file, tmp_path):
    def add_dense(group):
        names = list(group.attrs["weight_names"]) + [b"dense_1/kernel:0", b"dense_1/bias:0"]
        group.attrs["weight_names"] = np.array(names)
        group.create_dataset("dense_1/kernel:0", data=np.zeros((128, 7), np.float32))
        group.create_dataset("dense_1/bias:0", data=np.zeros((7,), np.float32))

    path = _edit_copy(of10_file, tmp_path / "extra.h5", add_dense)
    with pytest.raises(WeightsError, match=r"match no layer of the model \(2\): dense_1/kernel:0 \(128, 7\)"):
        from_keras2_h5(path, "openface10")


def test_wrong_arch_points_to_the_right_one(of10_file):
    with pytest.raises(WeightsError, match=r"looks like openface10: pass arch='openface10'"):
        from_keras2_h5(of10_file, "openface143")
    with pytest.raises(WeightsError, match=r"match no layer.*Fully_Connected/kernel:0"):
        from_keras2_h5(of10_file, "openface_base")


def test_not_hdf5(tmp_path):
    path = tmp_path / "of10.h5"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(WeightsError, match=r"of10.h5 is not an HDF5 file.*Received: path="):
        from_keras2_h5(path, "openface10")


def test_hdf5_that_is_not_keras(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 3)))
    with pytest.raises(WeightsError, match=r"not a Keras 2 model or weights file.*Received: path="):
        from_keras2_h5(path)


def test_keras3_weights_file_points_to_weights_argument(of10, tmp_path):
    path = tmp_path / "of10.weights.h5"
    of10.save_weights(path)
    with pytest.raises(WeightsError, match=r"Keras 3 weights file.*weights="):
        from_keras2_h5(path, "openface10")
    _assert_same_weights(openface10(weights=path), of10)  # where it belongs
    legacy = tmp_path / "of10_keras3.h5"
    of10.save(legacy)  # Keras 3's legacy .h5: the Keras 2 layout, but Keras 3 names
    with pytest.raises(WeightsError, match=r"saved by Keras 3\.\d+.*not by agns-port's Keras 2.*weights="):
        from_keras2_h5(legacy)


def test_unknown_architecture_cannot_be_inferred(tmp_path):
    path = tmp_path / "other.h5"
    write_keras2(path, [("dense", [("dense/kernel:0", np.zeros((3, 4), np.float32))])])
    with pytest.raises(WeightsError, match=r"Cannot tell which network other.h5 holds. Received: top-level"):
        from_keras2_h5(path)
    with pytest.raises(ValueError, match=r"Received: arch='vgg16'. Known: vgg10"):
        from_keras2_h5(path, "vgg16")
