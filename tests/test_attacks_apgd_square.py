"""APGD (Croce & Hein 2020) and the Square Attack (Andriushchenko et al. 2020): the papers' schedules,
what each method promises about its perturbation, and success on the tiny models and the real dlib one."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from advface.attacks.apgd import APGD, checkpoints
from advface.attacks.base import Dodge, Misclassify, TargetClass, goal_objective, goal_tensors
from advface.attacks.pgd import PGD
from advface.attacks.square import Square
from advface.errors import AdvfaceError
from advface.progress import Cancelled


@pytest.fixture(scope="module")
def chips(face_chips):
    return face_chips("openface")[1]


@pytest.fixture(scope="module")
def own_class(tiny_classifier, chips):
    """Misclassify each chip away from the tiny classifier's own prediction."""
    return Misclassify(tuple(tiny_classifier.embed(chips).argmax(axis=1)))


@pytest.fixture(scope="module")
def dodge(tiny_embedding, chips):
    return Dodge(tiny_embedding.embed(chips), paired=True)


def _raw(attack, monkeypatch) -> list:
    """Collect what ``attack`` returns per batch, before ``PixelAttack.__call__`` enforces mask, budget
    and range: the method's own perturbation."""
    seen = []
    attack_batch = attack._attack_batch

    def spy(batch):
        outcome = attack_batch(batch)
        seen.append(outcome.images - batch.images.numpy())
        return outcome

    monkeypatch.setattr(attack, "_attack_batch", spy)
    return seen


# --- APGD ---------------------------------------------------------------------------------------------


def test_checkpoints_follow_the_papers_schedule():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1); w_j = ceil(p_j * N_iter).
    assert checkpoints(100) == (0, 22, 41, 57, 70, 80, 87, 93, 99)
    assert checkpoints(1000) == (0, 220, 410, 570, 700, 800, 870, 930, 990)
    assert checkpoints(10) == (0, 3, 5, 6, 7, 8, 9, 10)  # ceil, repeats once


def test_apgd_does_at_least_as_well_as_pgd(tiny_classifier, chips, own_class):
    kwargs = dict(epsilon=2 / 255, steps=20)
    pgd = PGD(**kwargs)(tiny_classifier, chips, own_class, seed=0)
    apgd = APGD(**kwargs)(tiny_classifier, chips, own_class, seed=0)
    print(f"success rate at 2/255, 20 steps: PGD {pgd.success_rate:.2f}, APGD {apgd.success_rate:.2f}")
    assert apgd.success_rate >= pgd.success_rate > 0
    assert np.all(apgd.linf <= 2 / 255 + 1e-6)
    np.testing.assert_array_equal(apgd.queries, 21)


def test_dlr_loss_ignores_the_scale_of_the_logits(tiny_classifier, chips, own_class):
    # The loss itself: invariant to z -> a z + b.
    logits = tf.constant(tiny_classifier.embed(chips))
    for goal in (own_class, TargetClass(0)):
        g = goal_tensors(goal, tiny_classifier, len(chips))
        plain = goal_objective(g.kind, g.metric, g.tensors, logits, "dlr").numpy()
        scaled = goal_objective(g.kind, g.metric, g.tensors, 40.0 * logits - 3.0, "dlr").numpy()
        np.testing.assert_allclose(scaled, plain, rtol=1e-4, atol=1e-6)

    # An attack on it: the same network with its logits 40 times larger is attacked the same way.
    keras_model = tiny_classifier.keras_model
    louder = keras.models.clone_model(keras_model)
    weights = keras_model.get_weights()
    louder.set_weights(weights[:-2] + [40.0 * w for w in weights[-2:]])
    spec = dataclasses.replace(tiny_classifier.spec, name="tiny-classifier-x40", build=lambda: louder)
    louder_model = type(tiny_classifier)(louder, spec)
    attack = APGD(epsilon=2 / 255, steps=10, loss="dlr")
    a = attack(tiny_classifier, chips, own_class, seed=1)
    b = attack(louder_model, chips, own_class, seed=1)
    np.testing.assert_array_equal(a.success, b.success)
    assert np.mean(np.abs(a.images - b.images) > 1e-4) < 0.01


def test_apgd_l2_stays_in_its_ball_and_dodges(tiny_embedding, chips, dodge):
    result = APGD(epsilon=2.0, norm="l2", steps=10)(tiny_embedding, chips, dodge, seed=0)
    assert np.all(result.l2 <= 2.0 + 1e-4)
    assert result.success_rate >= 0.5


def test_apgd_dodges_the_real_dlib_model(face_chips):
    from advface.zoo import load_model

    model = load_model("dlib-resnet")
    x = face_chips("dlib")[1][:2]
    result = APGD(epsilon=4 / 255, steps=10)(model, x, Dodge(model.embed(x), paired=True), seed=0)
    print(
        f"dlib-resnet distances after APGD at 4/255, 10 steps: {np.round(result.scores, 3)} (threshold 0.6)"
    )
    assert result.success.all() and result.success_8bit.all()
    assert np.all(result.linf <= 4 / 255 + 1e-6)


# --- Square -------------------------------------------------------------------------------------------


def test_square_halves_its_squares_on_the_papers_schedule():
    # p = 0.8 halved after iterations 10, 50, 200, ... of 10,000 queries; side = round(sqrt(p * 100^2)).
    attack = Square(queries=10_000)
    assert [attack.side(i, 100) for i in (0, 10, 11, 50, 51, 201, 9000)] == [89, 89, 63, 63, 45, 32, 4]
    # Rescaled to 1,000 queries: iteration 2 is the paper's 20.
    assert [Square(queries=1000).side(i, 100) for i in (1, 2, 6)] == [89, 63, 45]


def test_square_dodges_within_its_query_budget(tiny_embedding, chips, dodge):
    result = Square(epsilon=8 / 255, queries=1000)(tiny_embedding, chips, dodge, seed=0)
    print(f"Square at 8/255: success {result.success_rate:.2f}, queries {result.queries.tolist()}")
    assert result.success_rate >= 0.7
    assert np.all(result.queries <= 1000)
    np.testing.assert_array_equal(result.queries, result.steps + 2)  # the clean image, the start, steps
    # An image stops once it dodges; the batch once all do (one progress step per iteration).
    assert np.all(result.queries[result.success] < 1000)
    assert len(result.history["step"]) == result.steps.max()


def test_square_linf_perturbs_on_the_vertices_of_the_box(tiny_embedding, chips, dodge, monkeypatch):
    eps = 6 / 255
    attack = Square(epsilon=eps, queries=60)
    seen = _raw(attack, monkeypatch)
    attack(tiny_embedding, chips, dodge, seed=3)
    delta = seen[0]
    adversarial = chips + delta
    changed = np.abs(delta) > 1e-7
    clipped = np.isclose(adversarial, 0.0, atol=1e-6) | np.isclose(adversarial, 1.0, atol=1e-6)
    assert changed.mean() > 0.9
    assert np.all(np.isclose(np.abs(delta), eps, atol=1e-6) | (clipped & changed) | ~changed)


def test_square_l2_stays_in_its_ball(tiny_embedding, chips, dodge, monkeypatch):
    attack = Square(epsilon=1.0, norm="l2", queries=60)
    seen = _raw(attack, monkeypatch)
    result = attack(tiny_embedding, chips, dodge, seed=0)
    norms = np.sqrt((seen[0].reshape(len(chips), -1).astype(np.float64) ** 2).sum(axis=1))
    print(f"L2 Square norms before the contract's projection: {np.round(norms, 4)}")
    assert np.all(norms <= 1.0 + 1e-4) and np.all(norms > 0.5)
    np.testing.assert_allclose(result.l2, norms, atol=1e-4)


def test_square_changes_only_masked_pixels(tiny_embedding, chips, dodge, monkeypatch):
    mask = np.zeros((96, 96), np.float32)
    mask[20:60, 10:80] = 1.0
    for norm, eps in (("linf", 8 / 255), ("l2", 1.0)):
        attack = Square(epsilon=eps, norm=norm, queries=20)
        seen = _raw(attack, monkeypatch)
        attack(tiny_embedding, chips, dodge, mask=mask, seed=0)
        assert np.all(seen[-1][:, mask == 0] == 0) and np.any(seen[-1][:, mask == 1] != 0)


# --- Both: the pixel-attack contract ------------------------------------------------------------------


@pytest.mark.parametrize("attack", [APGD(steps=4, batch_size=4), Square(queries=6, batch_size=4)])
def test_progress_once_per_step_cancel_and_seed(attack, tiny_embedding, chips, dodge):
    calls = []
    a = attack(tiny_embedding, chips, dodge, progress=calls.append, seed=5)
    assert len(calls) == len(a.history["step"]) and [c.step for c in calls] == list(range(1, len(calls) + 1))
    if isinstance(attack, APGD):
        assert len(calls) == 2 * 4  # two batches of four steps
    b = attack(tiny_embedding, chips, dodge, seed=5)
    np.testing.assert_array_equal(a.images, b.images)

    def stop(progress):
        if progress.step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        attack(tiny_embedding, chips, dodge, progress=stop, seed=5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: APGD(steps=0), "Received: steps=0"),
        (lambda: APGD(restarts=1.5), "Received: restarts=1.5"),
        (lambda: APGD(rho=1.5), "Received: rho=1.5"),
        (lambda: APGD(momentum=0.0), "Received: momentum=0.0"),
        (lambda: APGD(norm="l1"), "Received: norm='l1'"),
        (lambda: APGD(loss="hinge"), "Received: loss='hinge'"),
        (lambda: APGD(epsilon=-1.0), "Received: epsilon=-1.0"),
        (lambda: Square(queries=2), "Received: queries=2"),
        (lambda: Square(queries=0), "Received: queries=0"),
        (lambda: Square(p_init=0.0), "Received: p_init=0.0"),
        (lambda: Square(p_init=1.5), "Received: p_init=1.5"),
    ],
)
def test_bad_hyperparameters_say_what_was_received(make, message):
    with pytest.raises(AdvfaceError, match=message):
        make()
