"""The Keras port of dlib's ResNet against dlib itself, on the real sample faces."""

import dlib
import keras
import numpy as np
import pytest
import tensorflow as tf

from advface.assets import dlib_model_path
from advface.images import load_image, to_uint8
from advface.networks.dlib_format import DlibFormatError, pack_int, read_dlib_network
from advface.networks.dlib_resnet import build_dlib_resnet, dlib_resnet, load_dlib_weights

FACES = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
    "biden.jpg",
    "astronaut.png",
    "32bit.png",
]


@pytest.fixture(scope="module")
def model():
    return dlib_resnet()


@pytest.fixture(scope="module")
def dlib_chips(samples):
    """dlib's own chips (HOG + 5 points + get_face_chip), uint8, one per sample photo."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    chips = []
    for name in FACES:
        pixels = to_uint8(load_image(samples / name))
        rects = sorted(detector(pixels, 1), key=lambda r: r.area(), reverse=True)
        chips.append(dlib.get_face_chip(pixels, predictor(pixels, rects[0]), size=150, padding=0.25))
    return np.stack(chips)


def test_matches_dlib_on_every_sample_face(model, dlib_chips):
    net = dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))
    reference = np.stack([np.array(net.compute_face_descriptor(chip)) for chip in dlib_chips])
    ours = model.predict(dlib_chips.astype(np.float32) / 255.0, verbose=0)
    assert ours.shape == (len(FACES), 128)
    assert np.abs(ours - reference).max() <= 1e-4


def test_gradients_are_finite_and_nonzero(model, dlib_chips):
    x = tf.constant(dlib_chips[:2].astype(np.float32) / 255.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(model(x) - tf.reverse(model(x), axis=[0])))
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).max() > 0
    assert (np.abs(grad) > 0).mean() > 0.5  # gradients reach most pixels, not a few


def test_batch_size_independent(model, dlib_chips):
    x = dlib_chips.astype(np.float32) / 255.0
    together = model.predict(x, batch_size=len(x), verbose=0)
    one_by_one = np.concatenate([model.predict(x[i : i + 1], verbose=0) for i in range(len(x))])
    assert np.abs(together - one_by_one).max() < 1e-5


def test_saves_and_reloads(model, dlib_chips, tmp_path):
    x = dlib_chips[:2].astype(np.float32) / 255.0
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "dlib.keras")
    reloaded = keras.models.load_model(tmp_path / "dlib.keras")  # safe_mode stays on
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)
    model.save_weights(tmp_path / "dlib.weights.h5")
    np.testing.assert_allclose(
        dlib_resnet(tmp_path / "dlib.weights.h5").predict(x, verbose=0), expected, atol=1e-6
    )


def test_file_structure():
    records = read_dlib_network(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
    kinds = [r.kind for r in records]
    assert len(records) == 132 and kinds.count("con_4") == 29 and kinds.count("affine_") == 29
    assert records[0].values["rows"] == 150 and records[-1].values["dist_thresh"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[: len(b) // 2], "needs .* more bytes"),
        (lambda b: b + b"\x00\x00", "bytes left over"),
        (lambda b: b"\xff" + b[1:], "bad integer control byte"),
        (lambda b: b[:8] + b"garbage!" + b[16:], "not a readable dlib model file"),
        (lambda b: b"", "needs 1 more bytes"),
    ],
)
def test_malformed_files_are_refused(tmp_path, mangle, message):
    data = dlib_model_path("dlib_face_recognition_resnet_model_v1.dat").read_bytes()
    bad = tmp_path / "bad.dat"
    bad.write_bytes(mangle(data))
    with pytest.raises(DlibFormatError, match=message):
        dlib_resnet(bad)


def test_a_different_network_is_refused(tmp_path):
    """A well-formed dlib file of another architecture fails the layer-by-layer check."""
    data = dlib_model_path("dlib_face_recognition_resnet_model_v1.dat").read_bytes()
    # The first convolution's settings (32 filters, 7x7, stride 2, padding 0) follow its parameters.
    first_conv = b"".join(pack_int(v) for v in (32, 7, 7, 2, 2, 0, 0))
    assert data.count(first_conv) == 1
    other = data.replace(first_conv, b"".join(pack_int(v) for v in (32, 7, 7, 1, 1, 0, 0)))
    bad = tmp_path / "other.dat"
    bad.write_bytes(other)
    read_dlib_network(bad)  # still a well-formed dlib file ...
    with pytest.raises(DlibFormatError, match="conv at layer 1"):  # ... but not this network
        load_dlib_weights(build_dlib_resnet(), bad)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(DlibFormatError, match="Cannot read the dlib model file"):
        dlib_resnet(tmp_path / "nope.dat")
