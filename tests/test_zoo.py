"""The zoo as users meet it: `advface zoo convert` on real torch / Keras 2 files, the register, load_model.

The converted ArcFace net is also checked against the PyTorch reference on real aligned sample faces.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from keras2_layout import randomise as randomise_keras
from keras2_layout import write_source_openface
from torch_reference import IResNet, images, iresnet_input, randomise

from advface.errors import AdvfaceError, WeightsError


def advface(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "advface.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("advface: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def torch_r18():
    from advface.networks.iresnet import BLOCKS

    return randomise(IResNet(BLOCKS[18]), seed=18, calibration=iresnet_input(images(112, n=8, seed=3)))


@pytest.mark.slow
def test_convert_arcface_end_to_end_on_real_faces(torch_r18, models, tmp_path, samples, aligner):
    from advface.images import load_image
    from advface.savedmodels import register
    from advface.zoo import load_model

    backbone = tmp_path / "backbone.pth"
    torch.save(torch_r18.state_dict(), backbone)
    env = {"ADVFACE_MODELS": str(models)}

    before = json.loads(advface("zoo", "list", "--json", env=env).stdout)
    assert {r["name"]: r["available"] for r in before}["arcface-r18"] is False

    result = advface("zoo", "convert", "arcface-r18", backbone, "--json", env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["reload_max_diff"] == 0.0
    assert out["parameters"] == 24_040_320
    assert register()["arcface-r18.weights.h5"]["sha256"] == out["sha256"]
    assert "advface zoo convert arcface-r18 backbone.pth" in (models / "MODELS.md").read_text()

    after = json.loads(advface("zoo", "list", "--json", env=env).stdout)
    assert {r["name"]: r["available"] for r in after}["arcface-r18"] is True

    # A second convert does not silently replace the weights.
    assert "--overwrite" in one_line_error(advface("zoo", "convert", "arcface-r18", backbone, env=env))

    # load_model gives the PyTorch network's embeddings of real, ArcFace-aligned faces.
    model = load_model("arcface-r18")
    assert model.kind == "embedding" and model.input_size == 112 and model.spec.distance == "cosine"
    chips = np.stack(
        [aligner.align_one(load_image(samples / n), "arcface").chip for n in ("obama.jpg", "biden.jpg")]
    )
    with torch.no_grad():
        reference = torch_r18(iresnet_input(chips)).numpy()
    ours = model.embed(chips)
    assert np.abs(ours - reference).max() < 1e-4 * max(1.0, np.abs(reference).max())


def test_converted_weights_that_change_on_disk_are_refused(torch_r18, models, tmp_path):
    from advface.zoo import convert_model, load_model

    backbone = tmp_path / "backbone.pth"
    torch.save(torch_r18.state_dict(), backbone)
    convert_model("arcface-r18", backbone)
    weights = models / "arcface-r18.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the sha256"):
        load_model("arcface-r18")


def test_convert_refuses_a_malicious_pth_and_runs_nothing(models, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), "payload": Evil()}, path)
    error = one_line_error(
        advface("zoo", "convert", "arcface-r50", path, env={"ADVFACE_MODELS": str(models)})
    )
    assert "Refusing to load backbone.pth" in error and "nothing in the file was executed" in error
    assert not marker.exists()
    assert not (models / "arcface-r50.weights.h5").exists()


def test_convert_agns_openface10_with_labels(models, tmp_path, samples, aligner):
    from advface.images import load_image
    from advface.networks.openface import openface10
    from advface.zoo import load_model

    source = openface10()
    randomise_keras(source, seed=3)
    path = tmp_path / "of10.h5"
    write_source_openface(source, path)
    labels = tmp_path / "class-mapping_10.txt"
    names = [f"person_{i}" for i in range(10)]
    # agns-port's mapping format, in shuffled order.
    labels.write_text(
        "=== Class Mapping === \n\n" + "".join(f"{names[i]} : {i}\n" for i in (3, 1, 0, 2, 9, 8, 7, 6, 5, 4))
    )
    env = {"ADVFACE_MODELS": str(models)}
    result = advface("zoo", "convert", "openface10", path, "--labels", labels, env=env)
    assert result.returncode == 0, result.stderr
    assert "3,744,958 parameters" in result.stdout

    model = load_model("openface10")
    assert model.kind == "classifier" and model.labels == tuple(names)
    chip = aligner.align_one(load_image(samples / "obama.jpg"), "openface").chip[None]
    np.testing.assert_allclose(model.embed(chip), source.predict(chip, verbose=0), atol=1e-5)
    decision = model.classify(chip)[0]
    assert decision.label in names and 0 < decision.probability <= 1


def test_convert_errors(models, tmp_path):
    from advface.zoo import convert_model, load_model

    with pytest.raises(AdvfaceError, match=r"dlib-resnet has no converter.*Convertible: arcface-r18"):
        convert_model("dlib-resnet", tmp_path / "x.pth")
    with pytest.raises(WeightsError, match=r"Received: file=.*nope\.pth.*backbone\.pth"):
        convert_model("arcface-r50", tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match=r"advface zoo convert facenet-vggface2 FILE"):
        load_model("facenet-vggface2")
    # A facenet file offered as an ArcFace backbone: named tensors, not a crash.
    from torch_reference import InceptionResnetV1

    path = tmp_path / "facenet.pt"
    torch.save(InceptionResnetV1().state_dict(), path)
    with pytest.raises(WeightsError):
        convert_model("arcface-r50", path)
    assert not (models / "arcface-r50.weights.h5").exists()
    with pytest.raises(AdvfaceError, match="Unknown model. Received: model='arcface-r51'"):
        convert_model("arcface-r51", path)



def test_classifiers_are_refused_by_verification_with_advice(models, tmp_path):
    from advface.networks.openface import openface10
    from advface.verification import Verifier
    from advface.zoo import convert_model, load_model

    path = tmp_path / "of10.h5"
    write_source_openface(openface10(), path)
    convert_model("openface10", path)
    with pytest.raises(AdvfaceError, match=r"openface10 is a classifier\. Received: model='openface10'"):
        Verifier(load_model("openface10"))
