"""advface.attacks.metrics: rates, curves, minimal budgets, verification and identification metrics,
transfer, and the sanity flags; checked against hand-computed values, scikit-learn and an analytic
linear model."""

import dataclasses
import json

import numpy as np
import pytest

from advface.attacks.base import Dodge, Misclassify
from advface.attacks.metrics import (
    Curve,
    accuracy_at_k,
    flag_black_box_beats_white_box,
    flag_non_monotone,
    flag_zero_gradients,
    minimal_epsilon,
    minimal_perturbation,
    precision_recall,
    resize_for_model,
    sanity_flags,
    success_curve,
    success_rate,
    summary,
    tar_at_far,
    transfer_matrix,
    verification_under_attack,
)
from advface.attacks.pgd import PGD
from advface.errors import AdvfaceError
from advface.progress import Cancelled
from advface.verification import Gallery


def _face_model(keras_model, *, kind="embedding", threshold=None):
    """A Keras model on 96x96 OpenFace chips wrapped as a zoo FaceModel."""
    from advface.zoo import FaceModel, ModelSpec

    spec = ModelSpec(
        name=keras_model.name.replace("_", "-"),
        description="a test network",
        template="openface",
        distance="euclidean" if kind == "embedding" else None,
        threshold=threshold,
        weights="random",
        licence="MIT",
        build=lambda: keras_model,
        available=lambda: True,
        kind=kind,
    )
    return FaceModel(keras_model, spec)


def _random_embedding(name, chips, *, seed, stop_gradient=False):
    """A small random embedding net; threshold a third of the median distance between ``chips``."""
    import keras

    class StopGradient(keras.layers.Layer):
        def call(self, x):
            return keras.ops.stop_gradient(x)

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((96, 96, 3))
    x = StopGradient()(inputs) if stop_gradient else inputs
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(8)(x), name=name)
    e = np.asarray(model(chips))
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)[np.triu_indices(len(e), 1)]
    return _face_model(model, threshold=float(np.median(d) / 3))


@pytest.fixture(scope="module")
def chips(face_chips):
    return face_chips("openface")[1]


@pytest.fixture(scope="module")
def dodge(tiny_embedding, chips):
    return Dodge(tiny_embedding.embed(chips), paired=True)


@pytest.fixture(scope="module")
def pgd_result(tiny_embedding, chips, dodge):
    return PGD(epsilon=4 / 255, steps=10)(tiny_embedding, chips, dodge, seed=0)


# --- success rates --------------------------------------------------------------------------------------


def test_success_rate_of_arrays_and_results(pgd_result):
    success = np.array([True, False, True, True])
    clean = np.array([True, False, False, False])
    assert success_rate(success) == 0.75
    assert success_rate(success, exclude_clean=True, clean_success=clean) == pytest.approx(2 / 3)
    assert np.isnan(success_rate(success, exclude_clean=True, clean_success=np.ones(4, bool)))
    assert success_rate(pgd_result) == pgd_result.success_rate
    assert success_rate(pgd_result, eight_bit=True) == np.mean(pgd_result.success_8bit)
    with pytest.raises(AdvfaceError, match="Received: clean_success=None"):
        success_rate(success, exclude_clean=True)
    with pytest.raises(AdvfaceError, match="Received: 3 for 4 images"):
        success_rate(success, exclude_clean=True, clean_success=clean[:3])


def test_summary_is_json_ready(pgd_result):
    s = summary(pgd_result)
    json.dumps(s)
    assert s["success_rate"] == pgd_result.success_rate
    assert s["images"] == len(pgd_result.success)
    assert s["epsilon"] == pytest.approx(4 / 255)
    if pgd_result.success.any():
        assert s["median_linf"] <= 4 / 255 + 1e-6
    assert s["success_rate_excluding_clean"] == pgd_result.success_rate  # nothing is fooled clean


# --- curves and minimal budgets -------------------------------------------------------------------------


def test_minimal_epsilon_on_synthetic_matrices():
    epsilons = [1.0, 2.0, 4.0]
    success = np.array([[0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]], bool)
    np.testing.assert_array_equal(minimal_epsilon(success, epsilons), [2.0, 1.0, 4.0, np.inf])
    with pytest.raises(AdvfaceError, match=r"Received: success.shape=\(2, 4\) for 3 epsilons"):
        minimal_epsilon(success[:2], epsilons)
    with pytest.raises(AdvfaceError, match=r"Received: epsilons=\[2.0, 1.0, 4.0\]"):
        minimal_epsilon(success, [2.0, 1.0, 4.0])


def test_success_curve_with_pgd(tiny_embedding, chips, dodge):
    epsilons = np.array([0.25, 1, 4]) / 255
    seen = []
    curve = success_curve(
        lambda epsilon: PGD(epsilon=epsilon, steps=10),
        tiny_embedding,
        chips,
        dodge,
        epsilons,
        progress=seen.append,
        seed=0,
    )
    n = len(chips)
    assert curve.success.shape == curve.success_8bit.shape == curve.scores.shape == (3, n)
    assert curve.attack == "PGD" and curve.goal == "dodge" and curve.seed == 0
    rates = curve.success_rates()
    assert np.all(np.diff(rates) >= 0) and rates[-1] >= rates[0]
    assert rates[-1] == 1.0  # 4/255 fools the tiny net on every face
    assert np.all(curve.norms <= epsilons[:, None] + 1e-6)
    assert flag_non_monotone(curve) is None
    assert [(p.step, p.total, p.stage) for p in seen] == [(1, 3, "sweep"), (2, 3, "sweep"), (3, 3, "sweep")]
    assert np.all(curve.minimal_epsilons <= epsilons[-1])
    assert "epsilon" in curve.format()


def test_success_curve_cancel_and_bad_factories(tiny_embedding, chips, dodge):
    def stop(progress):
        raise Cancelled

    make = lambda epsilon: PGD(epsilon=epsilon, steps=2)  # noqa: E731
    with pytest.raises(Cancelled):
        success_curve(make, tiny_embedding, chips, dodge, [1 / 255, 2 / 255], progress=stop, seed=0)
    with pytest.raises(AdvfaceError, match=r"Received: PGD\(epsilon="):
        success_curve(PGD(steps=2), tiny_embedding, chips, dodge, [1 / 255])
    with pytest.raises(AdvfaceError, match="must return an attack with that epsilon. Received: PGD"):
        success_curve(lambda epsilon: PGD(steps=2), tiny_embedding, chips, dodge, [1 / 255])


def test_minimal_perturbation_matches_a_linear_model():
    """A linear two-class model: the smallest Linf change that flips class 0 is margin / ||w0 - w1||_1.

    The images are built so that this is exactly ``s`` per image (``x = 0.5 + s * sign(w0 - w1)``, the
    bias cancelling the 0.5 part); one is out of reach (``s`` > high) and one misclassified clean.
    """
    import keras

    d = 96 * 96 * 3
    rng = np.random.default_rng(0)
    w = rng.normal(size=(d, 2))
    w_diff = w[:, 0] - w[:, 1]
    w *= 100.0 / np.abs(w_diff).sum()  # ||w0 - w1||_1 = 100: margins of a few logits
    w_diff = w[:, 0] - w[:, 1]
    inputs = keras.Input((96, 96, 3))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)), name="linear")
    dense.set_weights([w.astype(np.float32), np.array([-0.5 * w_diff.sum(), 0.0], np.float32)])
    face_model = _face_model(model, kind="classifier")

    s = np.array([2, 5, 9, 40, 3]) / 255
    images = (0.5 + s[:, None] * np.sign(w_diff)[None]).reshape(-1, 96, 96, 3).astype(np.float32)
    labels = (0, 0, 0, 0, 1)  # the last one is class 0: misclassified already
    seen = []
    found = minimal_perturbation(
        lambda epsilon: PGD(epsilon=epsilon, steps=10, loss="margin"),
        face_model,
        images,
        Misclassify(labels),
        low=0.5 / 255,
        high=16 / 255,
        steps=8,
        progress=seen.append,
        seed=0,
    )
    reachable = slice(0, 3)
    assert np.all(found.lower[reachable] <= s[reachable] * (1 + 1e-4))
    assert np.all(found.epsilons[reachable] >= s[reachable] * (1 - 1e-4))
    np.testing.assert_allclose(found.epsilons[reachable], s[reachable], rtol=0.02)
    assert found.epsilons[3] == np.inf and found.epsilons[4] == 0.0
    assert found.median == found.epsilons[1]  # of 0, s0, s1, s2, inf
    linf = np.abs(found.images - images).reshape(5, -1).max(axis=1)
    assert np.all(linf[reachable] <= found.epsilons[reachable] + 1e-6)
    assert [p.stage for p in seen] == ["bisect"] * 9 and seen[-1].step == seen[-1].total == 9
    assert found.calls <= 1 + sum(min(2**r, 3) for r in range(8))
    with pytest.raises(AdvfaceError, match="Received: low=0.1, high=0.05"):
        minimal_perturbation(
            lambda e: PGD(epsilon=e), face_model, images, Misclassify(labels), low=0.1, high=0.05
        )


# --- verification ---------------------------------------------------------------------------------------


def test_tar_at_far_by_hand():
    genuine = [0.1, 0.3, 0.5, 0.6]
    impostor = [0.2, 0.5, 0.7, 0.9, 1.0]
    assert tar_at_far(genuine, impostor, 0.1) == 0.25  # threshold below 0.2
    assert tar_at_far(genuine, impostor, 0.2) == 0.5  # below 0.5: the genuine 0.5 is rejected too
    assert tar_at_far(genuine, impostor, 0.4) == 1.0  # below 0.7
    with pytest.raises(AdvfaceError, match="Received: target_far=1.5"):
        tar_at_far(genuine, impostor, 1.5)
    with pytest.raises(AdvfaceError, match=r"Received: impostor_distances.shape=\(0,\)"):
        tar_at_far(genuine, [], 0.1)


def test_tar_at_far_matches_sklearn_roc():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(1)
    genuine = rng.normal(0.5, 0.15, 300)
    impostor = rng.normal(1.0, 0.15, 2000)
    same = np.r_[np.ones(300), np.zeros(2000)]
    fpr, tpr, _ = roc_curve(same, -np.r_[genuine, impostor], drop_intermediate=False)
    for far in (1e-3, 1e-2, 0.1):
        assert tar_at_far(genuine, impostor, far) == pytest.approx(tpr[fpr <= far].max())


def test_verification_under_attack():
    report = verification_under_attack(
        [0.1, 0.3, 0.5, 0.6],
        [0.1, 0.8, 0.9, 0.9],  # dodging pushed three of four pairs apart
        [0.2, 0.5, 0.7, 0.9, 1.0],
        [0.1, 0.3, 0.6, 0.9, 1.0],  # impersonation pulled three of five together
        target_far=0.4,
    )
    assert report.threshold == pytest.approx(0.7) and report.threshold < 0.7
    assert (report.tar_clean, report.tar_attacked) == (1.0, 0.25)
    assert (report.far_clean, report.far_attacked) == (0.4, 0.6)
    assert "TAR clean 100.0%" in report.format()
    only_dodge = verification_under_attack([0.1], [0.9], [0.5, 0.9], target_far=0.5)
    assert only_dodge.far_attacked is None and only_dodge.tar_attacked == 0.0


# --- identification -------------------------------------------------------------------------------------


def test_accuracy_at_k_of_arrays_and_gallery_searches():
    ranked = [["a", "b", "c"], ["b", "a", "c"], ["c", "b", "a"], ["a", "c", "b"]]
    truth = ["a", "a", "a", "b"]
    assert [accuracy_at_k(ranked, truth, k) for k in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert accuracy_at_k(np.array([[1, 2], [2, 1]]), [2, 2], 1) == 0.5

    gallery = Gallery(
        np.array([[0.0, 0], [1, 0], [0, 1]]), ["a", "b", "c"], metric="euclidean", threshold=0.3
    )
    results = gallery.search(np.array([[0.1, 0], [0.6, 0], [0, 0.9]]), k=2)
    assert accuracy_at_k(results, ["a", "a", "c"], 1) == pytest.approx(2 / 3)
    assert accuracy_at_k(results, ["a", "a", "c"], 2) == 1.0
    assert accuracy_at_k(results, ["a", "a", "c"], 2, open_set=True) == pytest.approx(2 / 3)  # 0.6 rejected
    with pytest.raises(AdvfaceError, match="Received: k=3"):
        accuracy_at_k(results, ["a", "a", "c"], 3)
    with pytest.raises(AdvfaceError, match="Received: 3 rankings, 2 labels"):
        accuracy_at_k(results, ["a", "a"], 1)


def test_precision_recall_by_hand_and_with_rejections():
    pr = precision_recall(["a", "a", "b", "c"], ["a", "b", "b", None])
    assert pr.classes == ("a", "b", "c") and pr.rejected == 1
    np.testing.assert_allclose(pr.precision, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(pr.recall, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(pr.f1, [2 / 3, 2 / 3, 0.0])
    assert pr.macro_precision == pytest.approx(0.5)
    assert pr.weighted_recall == pytest.approx(0.5)  # (2 * 0.5 + 1 + 0) / 4
    assert pr.accuracy == 0.5
    with pytest.raises(AdvfaceError, match="Received: 3 true labels, 2 predicted labels"):
        precision_recall([1, 2, 3], [1, 2])


@pytest.mark.parametrize("kind", ["int", "str"])
def test_precision_recall_matches_sklearn(kind):
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 6, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 8, 200))  # 6, 7: never true
    y_true[:3] = 9  # a class never predicted
    if kind == "str":
        y_true, y_pred = y_true.astype(str), y_pred.astype(str)
    pr = precision_recall(y_true, y_pred)
    for average in ("macro", "weighted"):
        kw = {"average": average, "zero_division": 0}
        assert getattr(pr, f"{average}_precision") == pytest.approx(precision_score(y_true, y_pred, **kw))
        assert getattr(pr, f"{average}_recall") == pytest.approx(recall_score(y_true, y_pred, **kw))
        assert getattr(pr, f"{average}_f1") == pytest.approx(f1_score(y_true, y_pred, **kw))
    assert pr.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    np.testing.assert_allclose(pr.precision, precision_score(y_true, y_pred, average=None, zero_division=0))


# --- transfer -------------------------------------------------------------------------------------------


def test_transfer_between_models_of_the_same_size(tiny_embedding, chips, dodge, pgd_result):
    other = _random_embedding("other_tiny", chips, seed=3)
    matrix = transfer_matrix(
        {"tiny-embedding": pgd_result, "noise": np.clip(chips + 4 / 255, 0, 1)},
        {"tiny-embedding": tiny_embedding, "other-tiny": other},
        {"tiny-embedding": dodge, "other-tiny": Dodge(other.embed(chips), paired=True)},
        clean_images=chips,
    )
    assert matrix.rates.shape == (2, 2) and matrix.success.shape == (2, 2, len(chips))
    np.testing.assert_array_equal(matrix.success[0, 0], pgd_result.success)  # the white-box diagonal
    assert matrix.rates[0, 0] == pgd_result.success_rate
    np.testing.assert_array_equal(matrix.clean_rates, [0.0, 0.0])
    table = matrix.format()
    assert "other-tiny" in table and "clean" in table
    with pytest.raises(AdvfaceError, match="Received: no goal for other-tiny"):
        transfer_matrix({"a": chips}, {"other-tiny": other}, {"tiny-embedding": dodge})
    with pytest.raises(AdvfaceError, match="Received: clean_images=None"):
        transfer_matrix({"a": chips}, {"other-tiny": other}, {"other-tiny": dodge}, exclude_clean=True)


def test_transfer_to_a_model_of_another_size(tiny_embedding, chips, dodge, pgd_result):
    from advface.zoo import load_model

    dlib = load_model("dlib-resnet")
    resized = resize_for_model(chips, dlib)
    assert resized.shape == (len(chips), 150, 150, 3) and resized.dtype == np.float32
    assert 0.0 <= resized.min() and resized.max() <= 1.0
    np.testing.assert_array_equal(resize_for_model(chips, tiny_embedding), chips)
    matrix = transfer_matrix(
        {"tiny-embedding": pgd_result},
        {"tiny-embedding": tiny_embedding, "dlib-resnet": dlib},
        {"tiny-embedding": dodge, "dlib-resnet": Dodge(dlib.embed(resized), paired=True)},
        clean_images=chips,
        exclude_clean=True,
    )
    assert matrix.targets == ("tiny-embedding", "dlib-resnet")
    assert matrix.rates[0, 0] == pgd_result.success_rate
    assert 0.0 <= matrix.rates[0, 1] <= 1.0
    np.testing.assert_array_equal(matrix.clean_success, np.zeros((2, len(chips)), bool))


# --- sanity flags ---------------------------------------------------------------------------------------


def test_zero_gradient_flag(tiny_embedding, chips, dodge):
    blocked = _random_embedding("blocked", chips, seed=5, stop_gradient=True)
    goal = Dodge(blocked.embed(chips), paired=True)
    flag = flag_zero_gradients(blocked, chips, goal, epsilon=4 / 255, seed=0)
    assert flag.name == "zero_gradients" and flag.images == tuple(range(len(chips)))
    assert "masked gradients" in flag.message
    assert flag_zero_gradients(tiny_embedding, chips, dodge, epsilon=4 / 255, seed=0) is None
    flags = sanity_flags(model=blocked, images=chips, goal=goal, epsilon=4 / 255, seed=0)
    assert [f.name for f in flags] == ["zero_gradients"]
    with pytest.raises(AdvfaceError, match="Received: epsilon=None"):
        flag_zero_gradients(blocked, chips, goal, epsilon=None)
    with pytest.raises(AdvfaceError, match="Received: goal=None"):
        sanity_flags(model=blocked, images=chips, epsilon=4 / 255)


def _curve(success):
    success = np.asarray(success, bool)
    zeros = np.zeros(success.shape)
    epsilons = np.arange(1, len(success) + 1) / 255
    return Curve(epsilons, success, success, np.zeros(success.shape[1], bool), zeros, zeros)


def test_non_monotone_flag_on_fabricated_curves():
    assert flag_non_monotone(_curve([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])) is None  # one image: noise
    flag = flag_non_monotone(_curve([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]))
    assert flag.name == "non_monotone" and flag.images == (1, 2)
    assert "fell from 3 to 1 images" in flag.message
    assert flag_non_monotone(_curve([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]]), tolerance=0).images == (2,)
    with pytest.raises(AdvfaceError, match="Received: tolerance=-1"):
        flag_non_monotone(_curve([[1]]), tolerance=-1)


def test_result_flags(pgd_result):
    n = len(pgd_result.success)
    assert {f.name for f in sanity_flags(pgd_result)} <= {"lost_after_rounding"}  # nothing is fooled clean
    doctored = dataclasses.replace(
        pgd_result,
        success=np.array([True] * n),
        success_8bit=np.array([True] + [False] * (n - 1)),
        clean_success=np.array([False] * (n - 1) + [True]),
    )
    flags = {f.name: f for f in sanity_flags(doctored)}
    assert flags["lost_after_rounding"].images == tuple(range(1, n))
    assert flags["clean_success"].images == (n - 1,)
    assert "exclude_clean=True" in flags["clean_success"].message

    white = dataclasses.replace(pgd_result, success=np.array([True] + [False] * (n - 1)))
    black = dataclasses.replace(pgd_result, attack="Square", success=np.ones(n, bool))
    flag = flag_black_box_beats_white_box(white, black)
    assert flag.name == "black_box_beats_white_box" and flag.images == tuple(range(1, n))
    assert flag_black_box_beats_white_box(black, white) is None
    assert [f.name for f in sanity_flags(white_box=white, black_box=black)] == ["black_box_beats_white_box"]
    with pytest.raises(AdvfaceError, match="Received: white_box linf epsilon="):
        flag_black_box_beats_white_box(white, dataclasses.replace(black, epsilon=8 / 255))
    with pytest.raises(AdvfaceError, match="Received: white_box=PGD, black_box=None"):
        sanity_flags(white_box=white)
