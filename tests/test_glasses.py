"""The eyeglass geometry, the AGN DCGAN and the EyeglassAttack's mechanics."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from advface.alignment import FaceAligner
from advface.attacks.base import Dodge, Misclassify
from advface.attacks.eyeglasses import EyeglassAttack, join_gradients
from advface.errors import AdvfaceError
from advface.glasses import geometry as geo
from advface.images import load_image
from advface.networks.eyeglass_gan import MinibatchDiscrimination, eyeglass_discriminator, eyeglass_generator
from advface.zoo import FaceModel, ModelSpec

# -- geometry ------------------------------------------------------------------------------------------------


def test_mask_covers_about_six_percent_inside_the_canvas_and_under_the_marks():
    mask = geo.eyeglass_mask()
    assert mask.shape == (224, 224) and set(np.unique(mask)) == {0.0, 1.0}
    assert 0.055 <= mask.mean() <= 0.065
    canvas = geo.crop_canvas(mask)
    assert canvas.sum() == mask.sum()  # nothing outside rows 53..116, cols 25..200
    for x, y in geo.MARKS:
        assert mask[int(round(y)), int(round(x))] == 1.0
    thin = geo.eyeglass_mask(3.0)
    assert thin.sum() < mask.sum() and np.all(thin <= mask)
    with pytest.raises(AdvfaceError, match="Received: thickness=40"):
        geo.eyeglass_mask(40)


def test_template_matrix_matches_dlib_on_a_real_face(samples):
    aligner = FaceAligner()
    face = aligner.detect(load_image(samples / "obama.jpg"))[0]
    vgg = np.vstack([aligner.chip_matrix(face, "vgg"), [0, 0, 1]])
    for template in ("dlib", "openface", "arcface"):
        direct = np.vstack([aligner.chip_matrix(face, template), [0, 0, 1]]) @ np.linalg.inv(vgg)
        # Equal up to dlib's whole-pixel rectangles for this face: well under a chip pixel anywhere.
        corners = np.array([[0, 0], [223, 0], [0, 223], [223, 223]], np.float64)
        error = geo.apply_matrix(geo.template_matrix(template), corners) - geo.apply_matrix(direct, corners)
        assert np.abs(error).max() < 0.25, template
    np.testing.assert_allclose(geo.template_matrix("vgg"), np.eye(3), atol=1e-9)
    # The marks land where the image's own mapping puts them.
    image_marks = geo.apply_matrix(geo.image_matrix(aligner.chip_matrix(face, "vgg")), geo.MARKS)
    chip_marks = geo.apply_matrix(aligner.chip_matrix(face, "dlib"), image_marks)
    np.testing.assert_allclose(
        chip_marks, geo.apply_matrix(geo.template_matrix("dlib"), geo.MARKS), atol=1e-3
    )


def test_renderer_pastes_the_mask_exactly_at_the_template_pose():
    renderer = geo.GlassesRenderer(geo.Placement.digital("vgg", 2))
    white = np.ones((2, 64, 176, 3), np.float32)
    faces = np.zeros((2, 224, 224, 3), np.float32)
    out = np.asarray(renderer(white, faces, np.array([0, 1])))
    np.testing.assert_allclose(out[..., 0], np.broadcast_to(geo.eyeglass_mask(), (2, 224, 224)), atol=1e-6)


def test_renderer_on_the_dlib_chip_is_the_scaled_mask_and_differentiable():
    renderer = geo.GlassesRenderer(geo.Placement.digital("dlib", 1))
    glasses = tf.Variable(np.full((1, 64, 176, 3), 0.8, np.float32))
    faces = np.full((1, 150, 150, 3), 0.2, np.float32)
    with tf.GradientTape() as tape:
        out = renderer(glasses, faces, tf.constant([0]))
        total = tf.reduce_sum(out)
    alpha = (np.asarray(out)[0, ..., 0] - 0.2) / 0.6
    scale = 149 / 223
    assert abs(alpha.sum() - geo.eyeglass_mask().sum() * scale**2) / alpha.sum() < 0.02
    grad = tape.gradient(total, glasses).numpy()[0, ..., 0]
    mask = geo.canvas_mask()
    assert np.all(grad[mask == 0] == 0) and grad[mask == 1].min() > 0


def test_placement_rejects_bad_matrices():
    with pytest.raises(AdvfaceError, match="shape \\(N, 3, 3\\)"):
        geo.Placement(np.eye(3), (150, 150))
    with pytest.raises(AdvfaceError, match="singular"):
        geo.Placement(np.zeros((1, 3, 3)), (150, 150))


# -- the DCGAN -----------------------------------------------------------------------------------------------


def test_dcgan_parameter_counts_and_ranges():
    g, d = eyeglass_generator(), eyeglass_discriminator()
    assert g.count_params() == 633_403
    assert d.count_params() == 3_809_801
    x = np.asarray(g(np.random.default_rng(0).uniform(-1, 1, (4, 25)).astype(np.float32), training=False))
    assert x.shape == (4, 64, 176, 3) and x.min() >= 0 and x.max() <= 1
    assert d(x).shape == (4, 1)


def test_minibatch_discrimination_matches_the_formula():
    layer = MinibatchDiscrimination(5, 3)
    x = np.random.default_rng(1).normal(size=(4, 7)).astype(np.float32)
    out = np.asarray(layer(x))
    w, b = (v.numpy() for v in layer.weights)
    a = (x @ w + b).reshape(4, 5, 3)
    features = np.exp(-np.abs(a[:, None] - a[None]).sum(-1)).sum(1)
    np.testing.assert_allclose(out, np.concatenate([x, features], 1), rtol=1e-5, atol=1e-5)


# -- the attack's mechanics ----------------------------------------------------------------------------------


def test_join_gradients_follows_agn_per_sample():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 4, 5, 3)).astype(np.float32), rng.normal(size=(3, 4, 5, 3)).astype(np.float32)
    b[1] *= 50
    out = np.asarray(join_gradients(tf.constant(a), tf.constant(b), 0.3))
    for i in range(3):
        na, nb = np.linalg.norm(a[i]), np.linalg.norm(b[i])
        x, y = (a[i] * nb / na, b[i]) if na > nb else (a[i], b[i] * na / nb)
        np.testing.assert_allclose(out[i], 0.3 * x + 0.7 * y, rtol=1e-5, atol=1e-6)


def _tiny_classifier(classes: int = 4) -> FaceModel:
    """A small 96x96 classifier with batch norm (the kind of face model the attack must not change)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Conv2D(8, 5, strides=4)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(classes)(x))
    # Non-trivial moving statistics, as a trained model has.
    bn = model.layers[2]
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 8).astype(np.float32))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype(np.float32))
    spec = ModelSpec(
        name="tiny",
        description="test",
        template="openface",
        kind="classifier",
        distance=None,
        threshold=None,
        weights="none",
        licence="test",
        build=lambda: None,
        available=lambda: True,
    )
    return FaceModel(model, spec)


def test_one_step_is_one_generator_update_and_the_face_model_is_untouched():
    model = _tiny_classifier()
    face_weights = [w.copy() for w in model.keras_model.get_weights()]
    keras.utils.set_random_seed(4)
    g, d = eyeglass_generator(), eyeglass_discriminator()
    before = [w.copy() for w in g.get_weights()]
    real = np.random.default_rng(5).uniform(0, 1, (32, 64, 176, 3)).astype(np.float32)
    faces = np.random.default_rng(6).uniform(0, 1, (3, 96, 96, 3)).astype(np.float32)
    lr = 1e-3
    attack = EyeglassAttack(
        steps=1,
        learning_rate=lr,
        batch_size=4,
        check_every=1,
        check_samples=2,
        generator=g,
        discriminator=d,
        real_glasses=real,
    )
    result = attack(model, faces, Misclassify(0), seed=0)
    assert result.steps == 1 and len(result.history) == 1
    # The returned frame is the one the check judged: re-judged with a fresh forward pass, it fools the
    # same share of photos.
    assert result.success_per_image.mean() == result.history[-1].best_fraction
    # The caller's generator is not modified; the attack's copy moved by exactly one Adam step: the
    # first Adam step changes each weight with a non-zero gradient by lr (two steps would give 2 lr).
    for w0, w1 in zip(before, g.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    trainable = {id(v) for v in result.generator.trainable_variables}
    moves = [
        np.abs(v.numpy() - w0).max()
        for v, w0 in zip(result.generator.weights, before, strict=True)
        if id(v) in trainable
    ]
    assert max(moves) <= lr * 1.001
    assert max(moves) >= lr * 0.99
    # Moving statistics of the generator's batch norm are untouched (inference mode).
    for v, w0 in zip(result.generator.weights, before, strict=True):
        if "moving" in v.path:
            np.testing.assert_array_equal(v.numpy(), w0)
    for w0, w1 in zip(face_weights, model.keras_model.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)


def _white_generator() -> keras.Model:
    """Always the same all-white frame (a stand-in for speed: it is not what the test checks)."""
    z = keras.Input((25,))
    x = keras.layers.Dense(
        64 * 176 * 3, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(20.0)
    )(z)
    x = keras.layers.Activation("sigmoid")(x)
    return keras.Model(z, keras.layers.Reshape((64, 176, 3))(x))


def _region_model(rows: slice, cols: slice) -> FaceModel:
    """A 1-d 'embedding': the mean brightness of one region of the 150x150 chip."""
    inputs = keras.Input((150, 150, 3))
    out = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, rows, cols, :], axis=(1, 2, 3))[:, None])(inputs)
    spec = ModelSpec(
        name="region",
        description="test",
        template="dlib",
        kind="embedding",
        distance="euclidean",
        threshold=0.5,
        weights="none",
        licence="test",
        build=lambda: None,
        available=lambda: True,
    )
    return FaceModel(keras.Model(inputs, out), spec)


def test_the_success_check_uses_the_physical_warp_not_a_digital_paste():
    # Under the template pose the frame lies at rows ~43..72 of the dlib chip; the physical placement
    # (printed frames worn 40 px lower) puts its top bar at rows ~84..88, where the model looks.
    model = _region_model(slice(82, 91), slice(40, 110))
    faces = np.zeros((2, 150, 150, 3), np.float32)
    digital = geo.Placement.digital("dlib", 2)
    shift = np.array([[1, 0, 0], [0, 1, 40], [0, 0, 1]], np.float64)
    physical = geo.Placement(shift @ digital.matrices, (150, 150), physical=True)
    white = np.ones((2, 64, 176, 3), np.float32)
    assert np.asarray(geo.GlassesRenderer(digital).warp(white, np.arange(2))[1])[:, 82:91, 40:110].max() == 0
    goal = Dodge(np.zeros((1, 1), np.float32), threshold=0.3)  # fooled when the region turns bright
    real = np.random.default_rng(0).uniform(0, 1, (16, 64, 176, 3)).astype(np.float32)
    kwargs = dict(
        steps=1,
        batch_size=2,
        check_samples=2,
        generator=_white_generator(),
        discriminator=eyeglass_discriminator(),
        real_glasses=real,
        learning_rate=1e-9,
    )
    steps = []
    hit = EyeglassAttack(**kwargs)(model, faces, goal, placement=physical, seed=0, progress=steps.append)
    assert hit.success and hit.history[-1].best_fraction == 1.0 and np.all(hit.scores_after > 0.3)
    # The live view's best frame after the check (the GUI shows it) is the frame the result returns.
    live = steps[-1].metrics
    np.testing.assert_array_equal(live["glasses"], hit.glasses)
    np.testing.assert_allclose(live["worn"], hit.images, atol=1e-6)
    np.testing.assert_allclose(live["scores"], hit.scores_after, atol=1e-5)
    assert live["fooled"].tolist() == hit.success_per_image.tolist()
    miss = EyeglassAttack(**kwargs)(model, faces, goal, placement=digital, seed=0)
    assert not miss.success and miss.history[-1].best_fraction == 0.0
    # The returned photos are the warped composite.
    expected = np.asarray(
        geo.GlassesRenderer(physical)(np.repeat(hit.glasses[None], 2, 0), faces, np.arange(2))
    )
    np.testing.assert_allclose(hit.images, np.round(expected * 255) / 255, atol=1e-6)


def test_attack_rejects_a_goal_for_the_other_model_kind():
    model = _tiny_classifier()
    with pytest.raises(AdvfaceError, match="needs an embedding model"):
        EyeglassAttack(steps=1)(model, np.zeros((1, 96, 96, 3), np.float32), Dodge(np.zeros((1, 4))))
    with pytest.raises(AdvfaceError, match="Received: kappa=1.5"):
        EyeglassAttack(kappa=1.5)
