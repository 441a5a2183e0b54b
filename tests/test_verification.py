"""Distances, threshold calibration, 1:1 verification and 1:N identification."""

import numpy as np
import pytest

from advface.errors import AdvfaceError
from advface.images import load_image
from advface.verification import (
    Gallery,
    Verifier,
    calibrate_threshold,
    distances,
    label_from_filename,
    pairwise_distances,
)
from advface.zoo import load_model


def test_distances_match_numpy_formulas():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    euclid = np.array([[np.sqrt(((x - y) ** 2).sum()) for y in b] for x in a])
    cosine = np.array([[1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])
    np.testing.assert_allclose(pairwise_distances(a, b, "euclidean"), euclid, atol=1e-5)
    np.testing.assert_allclose(pairwise_distances(a, b, "cosine"), cosine, atol=1e-5)
    np.testing.assert_allclose(distances(a, b[:5], "euclidean"), np.diag(euclid[:, :5]), atol=1e-5)
    np.testing.assert_allclose(distances(a, b[:5], "cosine"), np.diag(cosine[:, :5]), atol=1e-5)
    with pytest.raises(AdvfaceError, match="Received: metric='manhattan'"):
        distances(a, a, "manhattan")


def test_calibration_at_target_far():
    # 1000 impostor pairs at distances 0.001 .. 1.000, 10 genuine pairs at 0.0005 .. 0.5.
    impostor = np.arange(1, 1001) / 1000
    genuine = np.linspace(0.0005, 0.5, 10)
    d = np.concatenate([impostor, genuine])
    same = np.r_[np.zeros(1000, bool), np.ones(10, bool)]
    c = calibrate_threshold(d, same, target_far=0.01)
    assert c.far == pytest.approx(0.01) and c.far <= c.target_far
    assert 0.010 <= c.threshold < 0.011  # accepts the 10 smallest impostors, not the 11th
    assert c.tar == pytest.approx(np.mean(genuine <= c.threshold))
    tight = calibrate_threshold(d, same, target_far=1e-4)  # below 1/1000: accept no impostor
    assert tight.far == 0 and tight.threshold < 0.001
    with pytest.raises(AdvfaceError, match="genuine and impostor"):
        calibrate_threshold([0.1, 0.2], [True, True], target_far=0.1)


def test_gallery_top_k_and_open_set_rejection():
    gallery = Gallery(
        np.array([[0, 0], [0, 1], [5, 5], [5, 6]], float),
        ["ann", "ann", "bob", "bob"],
        metric="euclidean",
        threshold=1.0,
    )
    near_bob, far_away = gallery.search(np.array([[5, 5.4], [20, 20]]), k=2)
    assert near_bob.label == "bob" and [m.label for m in near_bob.matches] == ["bob", "ann"]
    assert near_bob.matches[0].distance == pytest.approx(0.4)
    assert far_away.label is None and not far_away.accepted


def test_label_from_filename():
    assert label_from_filename("obama2.jpg") == "obama"
    assert label_from_filename("jane_doe_0003.png") == "jane_doe"
    assert label_from_filename("biden.jpg") == "biden"


def test_real_faces_verify_and_identify(samples, aligner):
    model = load_model("dlib-resnet")
    chips = {
        n: aligner.align_one(load_image(samples / n), model.template).chip
        for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
    }
    verifier = Verifier(model)
    same, different = verifier.verify(
        np.stack([chips["obama.jpg"]] * 2), np.stack([chips["obama2.jpg"], chips["biden.jpg"]])
    )
    assert same.same and same.distance < 0.45
    assert not different.same and different.distance > 0.75
    gallery = Gallery(
        model.embed(np.stack([chips["obama.jpg"], chips["obama2.jpg"], chips["biden.jpg"]])),
        ["obama", "obama", "biden"],
        metric="euclidean",
        threshold=model.threshold,
    )
    result = gallery.search(model.embed(chips["obama3.jpg"][None]), k=2)[0]
    assert result.label == "obama" and result.matches[1].label == "biden"


def test_embed_checks_its_input():
    model = load_model("dlib-resnet")
    with pytest.raises(AdvfaceError, match="Received: images.shape"):
        model.embed(np.zeros((1, 112, 112, 3), np.float32))
    with pytest.raises(AdvfaceError, match="Divide by 255"):
        model.embed(np.zeros((1, 150, 150, 3), np.uint8))
    assert model.embed(np.zeros((0, 150, 150, 3), np.float32)).shape == (0, 128)
    x = np.random.default_rng(0).uniform(size=(35, 150, 150, 3)).astype(np.float32)
    np.testing.assert_allclose(model.embed(x, batch_size=16), model.embed(x, batch_size=35), atol=1e-5)
