"""One contract for every pixel attack, on a tiny classifier, a tiny embedding model and dlib-resnet.

Shape, dtype, range [0, 1], the budget in its norm, the mask, success equal to a fresh forward pass
(also after 8-bit rounding), progress once per step, and Stop (``Cancelled``) stopping the attack.
"""

import numpy as np
import pytest

from advface.attacks import ATTACKS, Dodge, Impersonate, Misclassify, make_attack
from advface.attacks.base import Misidentify, judge
from advface.attacks.regions import region_mask
from advface.errors import AdvfaceError
from advface.progress import Cancelled
from advface.verification import Gallery

FAST = {  # few steps: the contract, not the strength, is under test here
    "fgsm": {},
    "bim": {"steps": 3},
    "pgd": {"steps": 3, "restarts": 2},
    "mifgsm": {"steps": 3, "diversity_prob": 0.5, "ti_kernel": 5},
    "cw": {"steps": 4, "binary_search_steps": 2},
    "deepfool": {"steps": 4},
    "apgd": {"steps": 4},
    "square": {"queries": 12},
}
NEEDS_EPSILON = {"fgsm", "bim", "pgd", "mifgsm", "apgd", "square"}


@pytest.fixture(scope="module")
def cases(face_chips, tiny_classifier, tiny_embedding):
    from advface.zoo import load_model

    _, small = face_chips("openface")
    _, chips = face_chips("dlib")
    dlib = load_model("dlib-resnet")
    labels = tiny_classifier.embed(small[:3]).argmax(axis=1)
    return {
        "tiny-classifier": (tiny_classifier, small[:3], Misclassify(labels), "openface"),
        "tiny-embedding": (
            tiny_embedding,
            small[:3],
            Impersonate(tiny_embedding.embed(small[5:6])),
            "openface",
        ),
        "dlib-resnet": (dlib, chips[1:3], Dodge(dlib.embed(chips[1:3]), paired=True), "dlib"),
    }


@pytest.mark.parametrize("case", ["tiny-classifier", "tiny-embedding", "dlib-resnet"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_keeps_the_contract(name, case, cases):
    model, images, goal, template = cases[case]
    norm = "l2" if name in ("cw", "deepfool") else "linf"
    epsilon = 8 / 255 if norm == "linf" else 1.0
    # Two batches (the second one partial), so that even one-step attacks report twice.
    attack = make_attack(name, epsilon=epsilon, norm=norm, batch_size=len(images) - 1, **FAST[name])
    mask = region_mask("eyeglasses", template)
    calls = []
    result = attack(model, images, goal, mask=mask, progress=calls.append, seed=0)

    # Shape, dtype, range.
    adversarial = result.images
    assert adversarial.shape == images.shape and adversarial.dtype == np.float32
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    # Budget in its norm, and the per-image norms reported are the real ones.
    delta = (adversarial - images).reshape(len(images), -1).astype(np.float64)
    linf, l2 = np.abs(delta).max(axis=1), np.sqrt((delta**2).sum(axis=1))
    np.testing.assert_allclose(result.linf, linf, atol=1e-7)
    np.testing.assert_allclose(result.l2, l2, rtol=1e-5, atol=1e-7)
    assert ((linf if norm == "linf" else l2) <= epsilon * (1 + 1e-5) + 1e-7).all()
    # The mask: nothing changes outside it; something changed inside it.
    outside = np.broadcast_to(mask[None, :, :, None] == 0, images.shape)
    assert np.array_equal(adversarial[outside], images[outside])
    assert linf.max() > 0
    # Success is what a fresh forward pass says, on the float and on the 8-bit images.
    fresh = judge(goal, model, model.embed(adversarial))
    np.testing.assert_array_equal(result.success, fresh.success)
    np.testing.assert_allclose(result.scores, fresh.score, rtol=1e-4, atol=1e-5)
    rounded = (np.round(adversarial * 255) / 255).astype(np.float32)
    np.testing.assert_array_equal(result.success_8bit, judge(goal, model, model.embed(rounded)).success)
    # Progress once per step: a running count, one history entry each, within the announced total.
    assert calls and [p.step for p in calls] == list(range(1, len(calls) + 1))
    assert len(result.history["step"]) == len(calls) and all(p.step <= p.total for p in calls)
    assert (result.steps >= 1).all() and (result.queries >= 1).all() and result.seed == 0

    # Stop: the callback raises Cancelled at the second step and the attack stops there.
    seen = []

    def stop(p):
        seen.append(p)
        if len(seen) == 2:
            raise Cancelled

    assert len(calls) >= 2  # two batches, at least one step each
    with pytest.raises(Cancelled):
        attack(model, images, goal, progress=stop, seed=0)
    assert len(seen) == 2


@pytest.mark.parametrize("name", sorted(NEEDS_EPSILON))
def test_attacks_are_reproducible_with_a_seed(name, cases):
    model, images, goal, _ = cases["tiny-embedding"]
    attack = make_attack(name, epsilon=4 / 255, **FAST[name])
    a = attack(model, images, goal, seed=3)
    b = attack(model, images, goal, seed=3)
    np.testing.assert_array_equal(a.images, b.images)


def test_goals_check_their_inputs(cases, tiny_embedding):
    model, images, _, _ = cases["dlib-resnet"]
    attack = make_attack("fgsm")
    with pytest.raises(AdvfaceError, match="Received: 3 for 2 images"):
        attack(model, images, Dodge(np.zeros((3, 128)), paired=True))
    with pytest.raises(AdvfaceError, match="have 16 dimensions but dlib-resnet gives 128"):
        attack(model, images, Dodge(np.zeros((1, 16))))
    with pytest.raises(AdvfaceError, match="must be 150x150"):
        attack(model, images[:, :96, :96], Dodge(np.zeros((1, 128))))
    gallery = Gallery(np.eye(2, 16), ["a", "b"], metric="euclidean", threshold=0.5)
    with pytest.raises(AdvfaceError, match="labels not in the gallery: c"):
        Misidentify(gallery, ["a", "c"])
    with pytest.raises(AdvfaceError, match="Received: norm='linf'"):
        make_attack("cw", norm="linf")
    with pytest.raises(AdvfaceError, match="Received: epsilon=-1"):
        make_attack("pgd", epsilon=-1)
    with pytest.raises(AdvfaceError, match="Known: fgsm, bim, pgd"):
        make_attack("boundary")
    with pytest.raises(AdvfaceError, match="mask.shape="):
        attack(tiny_embedding, cases["tiny-embedding"][1], cases["tiny-embedding"][2], mask=np.ones((5, 5)))


def test_misidentify_moves_a_probe_to_another_identity(face_chips, cases):
    """1:N on dlib-resnet: Obama, enrolled under his name, comes out nearest to Biden."""
    from advface.attacks.pgd import PGD

    model = cases["dlib-resnet"][0]
    names, chips = face_chips("dlib")
    index = {n: i for i, n in enumerate(names)}
    enrolled = chips[[index["obama2"], index["obama3"], index["biden"]]]
    gallery = Gallery(model.embed(enrolled), ["obama", "obama", "biden"], metric="euclidean", threshold=0.6)
    goal = Misidentify(gallery, ["obama"])
    probe = chips[[index["obama"]]]
    assert not judge(goal, model, model.embed(probe)).success.any()
    result = PGD(epsilon=8 / 255, steps=20)(model, probe, goal, seed=0)
    assert result.success.all() and result.predicted[0] == gallery.identities.index("biden")


@pytest.mark.parametrize("template", ["dlib", "openface", "arcface", "vgg"])
def test_named_regions_cover_the_same_part_of_every_template(template):
    from advface.alignment import get_template

    size = get_template(template).size
    glasses = region_mask("eyeglasses", template)
    forehead = region_mask("forehead", template)
    sticker = region_mask("sticker", template)
    assert glasses.shape == (size, size) and set(np.unique(glasses)) <= {0.0, 1.0}
    # 6% of the VGG and dlib chips (the same crop at two sizes); tighter crops show the frame larger.
    assert 0.04 < glasses.mean() < 0.10
    if template in ("dlib", "vgg"):
        assert abs(glasses.mean() - 0.0606) < 0.003
    rows = np.nonzero(glasses.any(axis=1))[0]
    assert np.nonzero(forehead.any(axis=1))[0].max() < rows.min() + 2  # the forehead is above the frame
    assert (sticker <= forehead).all() and sticker.sum() < forehead.sum()
