"""The saved-models register: hashes recorded, checked on load, and weights= resolution."""

import pytest

from advface.errors import WeightsError
from advface.savedmodels import models_dir, record, register, resolve_weights, sha256, weights_path


def test_record_adds_then_replaces_one_row(models):
    assert models_dir() == models
    models.mkdir()
    path = models / "m.weights.h5"
    path.write_bytes(b"first")
    digest = record(path, origin="converted from x.pth", command="advface zoo convert m x.pth")
    assert digest == sha256(path)
    assert register()["m.weights.h5"] == {
        "origin": "converted from x.pth",
        "command": "advface zoo convert m x.pth",
        "sha256": digest,
    }
    path.write_bytes(b"second")
    record(path, origin="again | with a pipe", command="advface zoo convert m y.pth")
    rows = [line for line in (models / "MODELS.md").read_text().splitlines() if "m.weights.h5" in line]
    assert len(rows) == 1 and register()["m.weights.h5"]["sha256"] == sha256(path)
    assert register()["m.weights.h5"]["origin"] == "again / with a pipe"


def test_weights_path_checks_the_recorded_hash(models):
    with pytest.raises(WeightsError, match=r"advface zoo convert arcface-r50 FILE"):
        weights_path("arcface-r50")
    models.mkdir()
    path = models / "arcface-r50.weights.h5"
    path.write_bytes(b"weights")
    record(path, origin="test", command="advface zoo convert arcface-r50 backbone.pth")
    assert weights_path("arcface-r50") == path
    path.write_bytes(b"tampered")
    with pytest.raises(
        WeightsError, match=r"does not match the sha256.*advface zoo convert arcface-r50 backbone"
    ):
        weights_path("arcface-r50")


def test_resolve_weights(models, tmp_path):
    assert resolve_weights(None) is None
    with pytest.raises(WeightsError, match=r"Received: weights='.*nope.weights.h5'"):
        resolve_weights(tmp_path / "nope.weights.h5")
    file = tmp_path / "w.weights.h5"
    file.write_bytes(b"x")
    assert resolve_weights(file) == file
    with pytest.raises(WeightsError, match="advface zoo convert vgg10 FILE"):
        resolve_weights("vgg10")
