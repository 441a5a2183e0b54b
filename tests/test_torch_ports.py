"""The Keras ports of insightface's IResNet and facenet-pytorch's InceptionResnetV1 against PyTorch.

The reference modules (``torch_reference.py``) are written from the upstream architectures (arcface_torch
``backbones/iresnet.py``, facenet-pytorch ``models/inception_resnet_v1.py``) with the same attribute
names, so their ``state_dict()`` keys are the upstream ones. Their weights are random but realistic: every
parameter is drawn at random, the batch-norm statistics are measured on a random batch and then perturbed,
so activations stay O(1) through the depth and a 1e-4 tolerance means something.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from torch import nn
from torch_reference import (
    InceptionResnetV1,
    IResNet,
    facenet_input,
    images,
    iresnet_input,
    max_diff,
    numpy_state,
    randomise,
    run,
)

from advface.errors import WeightsError
from advface.networks.inception_resnet_v1 import (
    convert_facenet,
    from_facenet_pytorch,
    inception_resnet_v1,
)
from advface.networks.iresnet import (
    BLOCKS,
    build_iresnet,
    convert_insightface,
    from_insightface,
    iresnet50,
)

TOLERANCE = 1e-4

@pytest.fixture(scope="module")
def torch_iresnet50():
    return randomise(IResNet(BLOCKS[50]), seed=50, calibration=iresnet_input(images(112, n=8, seed=1)))


@pytest.fixture(scope="module")
def iresnet50_file(torch_iresnet50, tmp_path_factory):
    path = tmp_path_factory.mktemp("insightface") / "backbone.pth"
    torch.save(torch_iresnet50.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def keras_iresnet50(iresnet50_file):
    return from_insightface(iresnet50_file)


@pytest.fixture(scope="module")
def torch_facenet():
    return randomise(InceptionResnetV1(), seed=160, calibration=facenet_input(images(160, n=8, seed=1)))


@pytest.fixture(scope="module")
def facenet_files(torch_facenet, tmp_path_factory):
    """The state dict as facenet-pytorch ships it (with the 8631-identity ``logits``), in both formats."""
    folder = tmp_path_factory.mktemp("facenet")
    state = torch_facenet.state_dict()
    generator = torch.Generator().manual_seed(8631)
    state["logits.weight"] = torch.randn(8631, 512, generator=generator)
    state["logits.bias"] = torch.randn(8631, generator=generator)
    torch.save(state, folder / "vggface2.pt")
    torch.save(state, folder / "vggface2-legacy.pt", _use_new_zipfile_serialization=False)
    return {"zip": folder / "vggface2.pt", "legacy": folder / "vggface2-legacy.pt"}


@pytest.fixture(scope="module")
def keras_facenet(facenet_files):
    return from_facenet_pytorch(facenet_files["zip"])


# ---------------------------------------------------------------------------------------------------------
# 1. Outputs match PyTorch.


def test_iresnet50_matches_pytorch(torch_iresnet50, keras_iresnet50):
    x = images(112, n=2, seed=2)
    with torch.no_grad():
        reference = torch_iresnet50(iresnet_input(x)).numpy()
    ours = run(keras_iresnet50, x)
    diff = max_diff(ours, reference)
    print(f"iresnet50: max |keras - torch| = {diff:.2e} (outputs up to {np.abs(reference).max():.2f})")
    assert keras_iresnet50.name == "iresnet50"
    assert ours.shape == (2, 512)
    assert 0.1 < np.abs(reference).max() < 100  # O(1) outputs: the tolerance is meaningful
    assert diff < TOLERANCE


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_facenet_matches_pytorch(torch_facenet, facenet_files, layout):
    model = from_facenet_pytorch(facenet_files[layout])
    x = images(160, n=2, seed=3)
    before_norm = {}
    hook = torch_facenet.last_bn.register_forward_hook(lambda m, i, out: before_norm.setdefault("x", out))
    with torch.no_grad():
        reference = torch_facenet(facenet_input(x)).numpy()
    hook.remove()
    ours, features = run(keras.Model(model.input, [model.output, model.get_layer("last_bn").output]), x)
    diff, diff_features = max_diff(ours, reference), max_diff(features, before_norm["x"].numpy())
    print(
        f"inception_resnet_v1 ({layout}): max |keras - torch| = {diff:.2e} on the unit embedding, "
        f"{diff_features:.2e} before L2 normalisation (values up to {before_norm['x'].abs().max():.2f})"
    )
    assert ours.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert 0.1 < before_norm["x"].abs().max() < 100
    assert diff < TOLERANCE
    assert diff_features < TOLERANCE


# ---------------------------------------------------------------------------------------------------------
# 2. Parameter counts: Keras trainable == torch parameters, Keras non-trainable == torch BN running stats.


def torch_counts(module: nn.Module) -> tuple[int, int]:
    params = sum(p.numel() for p in module.parameters())
    stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    return params, stats


def keras_counts(model: keras.Model) -> tuple[int, int]:
    count = lambda weights: sum(int(np.prod(w.shape)) for w in weights)  # noqa: E731
    return count(model.trainable_weights), count(model.non_trainable_weights)


@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_iresnet_parameter_counts(depth):
    params, stats = torch_counts(IResNet(BLOCKS[depth]))
    model = build_iresnet(depth)
    print(f"iresnet{depth}: {params:,} parameters + {stats:,} BN statistics = {model.count_params():,}")
    assert keras_counts(model) == (params, stats)
    assert model.count_params() == params + stats


def test_inception_resnet_v1_parameter_count(torch_facenet, keras_facenet):
    params, stats = torch_counts(torch_facenet)
    print(f"inception_resnet_v1: {params:,} parameters + {stats:,} BN statistics")
    assert keras_counts(keras_facenet) == (params, stats)
    assert keras_facenet.count_params() == params + stats


# ---------------------------------------------------------------------------------------------------------
# 3. The converters fail loudly, before assigning anything.


@pytest.fixture(scope="module")
def iresnet18_state():
    return numpy_state(IResNet(BLOCKS[18]).eval())


@pytest.fixture(scope="module")
def fresh_iresnet18():
    return build_iresnet(18)


def mutate(state: dict, how: str, key: str) -> dict:
    state = dict(state)
    if how == "extra":
        state[key] = np.zeros(3, np.float32)
    elif how == "missing":
        del state[key]
    else:
        state[key] = np.zeros(state[key].shape[:-1] + (state[key].shape[-1] - 1,), np.float32)
    return state


@pytest.mark.parametrize(
    "how, key, message",
    [
        ("extra", "layer2.0.se.weight", r"unknown tensors \(1\): layer2\.0\.se\.weight"),
        ("missing", "layer3.1.conv2.weight", r"missing tensors \(1\): layer3\.1\.conv2\.weight"),
        ("misshaped", "fc.bias", r"fc\.bias \(511,\) \(expected \(512,\)\)"),
        ("misshaped", "layer1.0.prelu.weight", r"layer1\.0\.prelu\.weight \(63,\) \(expected \(64,\)\)"),
    ],
)
def test_insightface_converter_rejects(iresnet18_state, fresh_iresnet18, how, key, message):
    before = fresh_iresnet18.get_layer("conv1").get_weights()[0].copy()
    with pytest.raises(WeightsError, match=r"not an insightface iresnet18 backbone\. Received: .*" + message):
        convert_insightface(mutate(iresnet18_state, how, key), fresh_iresnet18)
    np.testing.assert_array_equal(fresh_iresnet18.get_layer("conv1").get_weights()[0], before)


def test_insightface_converter_reports_every_problem_at_once(iresnet18_state, fresh_iresnet18):
    state = mutate(iresnet18_state, "extra", "head.weight")
    state = mutate(state, "missing", "features.running_var")
    state = mutate(state, "misshaped", "conv1.weight")
    with pytest.raises(WeightsError) as info:
        convert_insightface(state, fresh_iresnet18)
    for name in ("head.weight", "features.running_var", "conv1.weight"):
        assert name in str(info.value)


def test_insightface_converter_rejects_wrong_depth(iresnet18_state, fresh_iresnet18):
    # iresnet18's tensors in an iresnet34: layer1.2, layer2.2 ... are missing.
    with pytest.raises(WeightsError, match=r"missing tensors \(\d+\): layer1\.2\.bn1\.weight"):
        convert_insightface(iresnet18_state, build_iresnet(34))


def test_from_insightface_checks_depth(iresnet18_state, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save({k: torch.from_numpy(v) for k, v in iresnet18_state.items()}, path)
    with pytest.raises(
        WeightsError, match=r"holds an iresnet18 backbone, not iresnet50\. Received: depth=50"
    ):
        from_insightface(path, depth=50)
    with pytest.raises(ValueError, match=r"one of \[18, 34, 50, 100\]\. Received: depth=77"):
        from_insightface(path, depth=77)
    assert from_insightface(path, depth=18).name == "iresnet18"


def test_from_insightface_rejects_other_networks(torch_facenet, tmp_path):
    path = tmp_path / "facenet.pt"
    torch.save(torch_facenet.state_dict(), path)
    with pytest.raises(WeightsError, match=r"not an insightface IResNet backbone.*\(0, 0, 0, 0\) blocks"):
        from_insightface(path)


def test_build_iresnet_rejects_unknown_depth():
    with pytest.raises(ValueError, match=r"Received: depth=152"):
        build_iresnet(152)


@pytest.mark.parametrize(
    "how, key, message",
    [
        ("extra", "classifier.weight", r"unknown tensors \(1\): classifier\.weight"),
        ("extra", "logits.scale", r"unknown tensors \(1\): logits\.scale"),
        ("missing", "block8.conv2d.bias", r"missing tensors \(1\): block8\.conv2d\.bias"),
        ("misshaped", "last_bn.running_var", r"last_bn\.running_var \(511,\) \(expected \(512,\)\)"),
    ],
)
def test_facenet_converter_rejects(torch_facenet, keras_facenet, how, key, message):
    state = mutate(numpy_state(torch_facenet), how, key)
    before = keras_facenet.get_layer("last_bn").get_weights()[3].copy()
    with pytest.raises(
        WeightsError, match=r"not facenet-pytorch's InceptionResnetV1\. Received: .*" + message
    ):
        convert_facenet(state, keras_facenet)
    np.testing.assert_array_equal(keras_facenet.get_layer("last_bn").get_weights()[3], before)


def test_facenet_converter_ignores_only_logits_and_counters(torch_facenet, keras_facenet):
    state = numpy_state(torch_facenet)
    assert any(k.endswith("num_batches_tracked") for k in state)
    state["logits.weight"], state["logits.bias"] = np.zeros((10575, 512), np.float32), np.zeros(10575)
    convert_facenet(state, keras_facenet)  # accepted: both families are in the table as ignored


# ---------------------------------------------------------------------------------------------------------
# 4. Round trips through Keras files.


def test_iresnet50_weights_round_trip(keras_iresnet50, iresnet50_file, tmp_path):
    path = tmp_path / "x.weights.h5"
    keras_iresnet50.save_weights(path)
    x = images(112, n=2, seed=4)
    np.testing.assert_array_equal(run(iresnet50(weights=path), x), run(keras_iresnet50, x))
    with pytest.raises(
        WeightsError, match=r"Received: weights='.*backbone\.pth'\. Convert .* from_insightface"
    ):
        iresnet50(weights=iresnet50_file)


@pytest.mark.slow
def test_inception_resnet_v1_keras_file_round_trip(keras_facenet, tmp_path):
    path = tmp_path / "facenet.keras"
    keras_facenet.save(path)
    loaded = keras.models.load_model(path)
    x = images(160, n=2, seed=5)
    np.testing.assert_array_equal(run(loaded, x), run(keras_facenet, x))
    weights = tmp_path / "facenet.weights.h5"
    keras_facenet.save_weights(weights)
    np.testing.assert_array_equal(run(inception_resnet_v1(weights=weights), x), run(keras_facenet, x))


# ---------------------------------------------------------------------------------------------------------
# 5. Gradients reach the input (attacks need them).


@pytest.mark.parametrize("name", ["iresnet50", "inception_resnet_v1"])
def test_gradients_are_finite_and_nonzero(name, keras_iresnet50, keras_facenet):
    model = {"iresnet50": keras_iresnet50, "inception_resnet_v1": keras_facenet}[name]
    size = model.input_shape[1]
    x = tf.constant(images(size, n=2, seed=6))
    direction = tf.constant(np.random.default_rng(7).normal(size=(2, 512)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x) * direction)
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).max() > 0
    assert (np.abs(grad) > 0).mean() > 0.5
