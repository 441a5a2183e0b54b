"""C&W-L2 and DeepFool: minimal perturbations against the analytic answer on linear classifiers, the pixel
attack contract on the tiny models, and DeepFool dodging the real dlib model on real faces."""

import keras
import numpy as np
import pytest

from advface.attacks.base import Dodge, Impersonate, Misclassify, Misidentify, TargetClass
from advface.attacks.cw import CarliniWagnerL2
from advface.attacks.deepfool import DeepFool
from advface.errors import AdvfaceError
from advface.progress import Cancelled
from advface.verification import Gallery
from advface.zoo import FaceModel, ModelSpec, load_model

# --- Affine classifiers, where the minimal L2 perturbation is known -------------------------------------

SIDE = 96


def _linear_problem(distances, n: int = 3, seed: int = 0):
    """An affine classifier ``z = W^T flatten(x) + b`` on 96x96 chips (a FaceModel) and ``n`` images it
    puts in class 0, each exactly ``distances[j - 1]`` (L2) from its boundary with class ``j``.

    The images are mid-grey plus noise orthogonal to every column of ``W``, so they share their logits;
    the minimal perturbation out of class 0 is ``min(distances)``, far from the box [0, 1]."""
    rng = np.random.default_rng(seed)
    classes = len(distances) + 1
    w = rng.normal(0.0, 0.01, (SIDE * SIDE * 3, classes)).astype(np.float32)
    w64 = w.astype(np.float64)
    grey = np.full(len(w), 0.5)
    noise = rng.uniform(-0.2, 0.2, (n, len(w)))
    q = np.linalg.qr(w64)[0]
    noise -= (noise @ q) @ q.T
    b = -(grey @ w64)
    for j, distance in enumerate(distances, start=1):
        b[j] -= distance * np.linalg.norm(w64[:, j] - w64[:, 0])
    inputs = keras.Input((SIDE, SIDE, 3))
    dense = keras.layers.Dense(classes)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)), name=f"linear_{classes}")
    dense.set_weights([w, b.astype(np.float32)])
    spec = ModelSpec(
        name=f"linear-{classes}",
        description="an affine test classifier",
        template="openface",
        distance=None,
        threshold=None,
        weights="random",
        licence="MIT",
        build=lambda: model,
        available=lambda: True,
        kind="classifier",
    )
    images = (grey + noise).reshape(n, SIDE, SIDE, 3).astype(np.float32)
    assert 0.25 < images.min() and images.max() < 0.75
    return FaceModel(model, spec), images


@pytest.fixture(scope="module", params=[(1.0,), (1.0, 1.2, 1.5, 2.0)], ids=["2-class", "5-class"])
def linear(request):
    """``(model, images)``: minimal L2 perturbation out of class 0 exactly 1.0."""
    return _linear_problem(request.param)


def test_deepfool_is_exact_on_a_linear_classifier(linear):
    model, x = linear
    result = DeepFool()(model, x, Misclassify(0), seed=0)
    assert result.success.all()
    print(f"\nDeepFool / analytic minimal L2 ({model.name}): {np.round(result.l2, 4)}")
    # One step lands on the boundary; the overshoot takes it 2% past.
    np.testing.assert_allclose(result.l2, 1.02, rtol=1e-3)
    assert (result.steps == 1).all() and (result.queries == 3).all()  # ranking, step, check


def test_deepfool_binary_form_on_a_target_class():
    model, x = _linear_problem((1.0,), seed=1)
    result = DeepFool(overshoot=0.01)(model, x, TargetClass(1), seed=0)
    assert result.success.all()
    np.testing.assert_allclose(result.l2, 1.01, rtol=1e-3)


def test_cw_is_near_minimal_on_a_linear_classifier(linear):
    model, x = linear
    result = CarliniWagnerL2()(model, x, Misclassify(0), seed=0)
    assert result.success.all()
    print(f"\nC&W / analytic minimal L2 ({model.name}): {np.round(result.l2, 4)}; steps {result.steps}")
    assert np.all(result.l2 >= 0.999) and np.all(result.l2 <= 1.05)
    assert np.all(result.queries == result.steps) and np.all(result.steps <= 5 * 100)


def test_cw_returns_the_smallest_successful_iterate():
    """With one image and ``confidence=0`` the loss of a successful iterate is its squared L2, so the
    history shows every successful iterate's norm: the result is the smallest of them, not the last.
    An image that never succeeds returns the iterate closest to the goal, not the clean image."""
    model, x = _linear_problem((1.0,), n=1, seed=2)
    result = CarliniWagnerL2(steps=30, binary_search_steps=4)(model, x, Misclassify(0), seed=0)
    assert result.success.all()
    successful = np.sqrt(result.history["loss"][result.history["success_rate"] == 1.0])
    assert len(np.unique(successful)) >= 5 and successful[-1] > successful.min()
    np.testing.assert_allclose(result.l2, successful.min(), rtol=1e-4)

    weak = CarliniWagnerL2(steps=5, binary_search_steps=1, learning_rate=1e-4)(model, x, Misclassify(0))
    assert not weak.success.any()
    assert np.all(weak.l2 > 0) and np.all(weak.scores < weak.clean_scores)


# --- The contract on the tiny models ---------------------------------------------------------------------


def _goals(kind, model, chips, names):
    embeddings = model.embed(chips)
    if kind == "misclassify":
        return Misclassify(tuple(embeddings.argmax(axis=1)))
    if kind == "dodge":
        return Dodge(embeddings, paired=True)
    if kind == "impersonate":
        return Impersonate(np.roll(embeddings, 1, axis=0), paired=True)
    gallery = Gallery(embeddings, names, metric="euclidean", threshold=model.threshold)
    return Misidentify(gallery, names, open_set=kind == "misidentify-open")


ATTACKS = {
    "deepfool": lambda: DeepFool(steps=30),
    "cw": lambda: CarliniWagnerL2(steps=50),
}


@pytest.mark.parametrize("kind", ["misclassify", "dodge", "impersonate", "misidentify", "misidentify-open"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_succeeds_on_the_tiny_models(attack, kind, face_chips, tiny_classifier, tiny_embedding):
    names, chips = face_chips("openface")
    chips = chips[:4]
    names = names[:4]
    model = tiny_classifier if kind == "misclassify" else tiny_embedding
    goal = _goals(kind, model, chips, names)
    events = []
    instance = ATTACKS[attack]()
    result = instance(model, chips, goal, progress=events.append, seed=0)
    assert result.success.all(), (result.scores, result.clean_scores)
    assert result.images.shape == chips.shape and result.images.dtype == np.float32
    assert result.images.min() >= 0.0 and result.images.max() <= 1.0
    assert result.epsilon is None and result.norm == "l2"
    assert 0 < len(events) <= instance.planned_steps() == events[0].total
    assert len(result.history["step"]) == len(events)
    assert np.all(result.steps <= instance.planned_steps()) and np.all(result.queries >= result.steps)
    assert np.all(result.l2[~result.clean_success] > 0)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_mask_is_respected(attack, face_chips, tiny_embedding):
    chips = face_chips("openface")[1][:2]
    mask = np.zeros((96, 96), np.float32)
    mask[20:50, 10:86] = 1.0
    goal = Dodge(tiny_embedding.embed(chips), paired=True)
    result = ATTACKS[attack]()(tiny_embedding, chips, goal, mask=mask, seed=0)
    assert result.success.all()
    outside = np.broadcast_to(mask[None, :, :, None] == 0, chips.shape)
    np.testing.assert_array_equal(result.images[outside], chips[outside])
    assert np.abs(result.images - chips)[~outside].max() > 0


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_cancel_propagates(attack, face_chips, tiny_embedding):
    chips = face_chips("openface")[1][:2]

    def stop(event):
        if event.step == 1:
            raise Cancelled

    goal = Dodge(tiny_embedding.embed(chips), paired=True)
    with pytest.raises(Cancelled):
        ATTACKS[attack]()(tiny_embedding, chips, goal, progress=stop)


def test_epsilon_caps_the_perturbation(face_chips, tiny_embedding):
    chips = face_chips("openface")[1][:2]
    goal = Dodge(tiny_embedding.embed(chips), paired=True)
    result = DeepFool(epsilon=1e-3)(tiny_embedding, chips, goal, seed=0)
    assert result.epsilon == 1e-3 and np.all(result.l2 <= 1e-3 + 1e-6)


@pytest.mark.parametrize(
    ("attack", "kwargs", "match"),
    [
        (CarliniWagnerL2, {"norm": "linf"}, r"C&W-L2 attacks in l2\. Received: norm='linf'"),
        (CarliniWagnerL2, {"steps": 0}, "Received: steps=0"),
        (CarliniWagnerL2, {"binary_search_steps": 1.5}, "Received: binary_search_steps=1.5"),
        (CarliniWagnerL2, {"initial_const": 0.0}, "Received: initial_const=0.0"),
        (CarliniWagnerL2, {"learning_rate": -0.01}, "Received: learning_rate=-0.01"),
        (CarliniWagnerL2, {"confidence": -1.0}, "Received: confidence=-1.0"),
        (CarliniWagnerL2, {"epsilon": 0.0}, "Received: epsilon=0.0"),
        (DeepFool, {"norm": "linf"}, r"DeepFool attacks in l2\. Received: norm='linf'"),
        (DeepFool, {"steps": -1}, "Received: steps=-1"),
        (DeepFool, {"overshoot": -0.1}, "Received: overshoot=-0.1"),
        (DeepFool, {"candidates": 0}, "Received: candidates=0"),
    ],
)
def test_bad_hyperparameters(attack, kwargs, match):
    with pytest.raises(AdvfaceError, match=match):
        attack(**kwargs)


# --- The real model ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deepfool_dodges_dlib_resnet(face_chips):
    model = load_model("dlib-resnet")
    chips = face_chips("dlib")[1][:2]
    goal = Dodge(model.embed(chips), paired=True)
    result = DeepFool(steps=10)(model, chips, goal, seed=0)
    print(
        f"\nDeepFool dodging dlib-resnet (threshold {model.threshold}): "
        f"median L2 {np.median(result.l2):.3f}, "
        f"L2 {np.round(result.l2, 3)}, Linf {np.round(result.linf * 255, 1)}/255, distances "
        f"{np.round(result.scores, 4)}, steps {result.steps}, 8-bit success {result.success_8bit}"
    )
    assert result.success.all()
    assert np.all(result.scores > model.threshold)
    assert np.all(result.l2 < 5.0)
