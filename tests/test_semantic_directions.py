"""Attribute scorers, InterFaceGAN boundaries and the shipped and learned directions."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from advface.cli import main
from advface.errors import AdvfaceError
from advface.images import load_image
from advface.semantic import scorers
from advface.semantic.directions import Directions, fit_boundary, load_directions
from advface.semantic.scorers import head_pose, measure_faces


def _project(yaw_deg: float, pitch_deg: float, size: float = 256.0) -> np.ndarray:
    """The generic head turned so that it looks ``yaw`` right and ``pitch`` up, seen by a pinhole camera."""
    model = scorers._MODEL_POINTS * np.array([1.0, -1.0, -1.0])  # camera frame: x right, y down, z away
    a, b = np.radians(yaw_deg), np.radians(pitch_deg)
    # Rotations that carry the forward axis (0, 0, -1) to (sin a, 0, -cos a), then tilt it up by b.
    turn = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])
    points = model @ (turn @ tilt).T + np.array([0.0, 0.0, 600.0])
    pixels = points[:, :2] / points[:, 2:] * size + size / 2
    landmarks = np.zeros((68, 2))
    landmarks[list(scorers._PNP_LANDMARKS)] = pixels
    return landmarks


@pytest.mark.parametrize(("yaw", "pitch"), [(0, 0), (25, 0), (-30, 0), (0, 15), (20, -10)])
def test_head_pose_recovers_known_angles(yaw, pitch):
    measured = head_pose(_project(yaw, pitch), 256.0)
    np.testing.assert_allclose(measured, (yaw, pitch), atol=0.5)


def test_mirroring_a_real_photo_flips_its_yaw(samples):
    photos = [load_image(samples / name) for name in ("obama2.jpg", "biden.jpg", "obama3.jpg")]
    for photo in photos:
        both = measure_faces(np.stack([photo, photo[:, ::-1]]))
        assert both.found.all()
        yaw, mirrored = both.scores["yaw"]
        assert abs(yaw) > 10 and np.sign(yaw) == -np.sign(mirrored)
        assert abs(yaw + mirrored) < 0.5 * abs(yaw)  # dlib's landmarks are not mirror-symmetric
        # Ratios do not care about the mirror.
        for name in ("smile", "eyes", "size", "brightness"):
            np.testing.assert_allclose(both.scores[name][0], both.scores[name][1], rtol=0.15)


def test_brightness_and_size_respond_to_the_image(samples):
    photo = load_image(samples / "obama.jpg")
    darker = measure_faces(np.stack([photo, photo * 0.5]))
    np.testing.assert_allclose(
        darker.scores["brightness"][1], darker.scores["brightness"][0] * 0.5, rtol=0.03
    )
    empty = measure_faces(np.zeros((1, 300, 300, 3), np.float32))
    assert not empty.found[0] and np.isnan(empty.scores["yaw"][0])
    with pytest.raises(AdvfaceError, match=r"Received: box=\(0.5, 0.1, 0.2, 0.9\)"):
        measure_faces(photo[None], box=(0.5, 0.1, 0.2, 0.9))


def test_fit_boundary_recovers_a_linear_attribute():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal(32)
    truth /= np.linalg.norm(truth)
    latents = rng.standard_normal((4000, 32))
    scores = latents @ truth + 0.1 * rng.standard_normal(4000)
    scores[:50] = np.nan  # faces not found are left out
    boundary = fit_boundary(latents, scores, ratio=0.1, seed=0)
    assert boundary.normal @ truth > 0.98  # unit normal, pointing towards high scores
    np.testing.assert_allclose(np.linalg.norm(boundary.normal), 1.0)
    assert boundary.validation_accuracy > 0.97 and boundary.positives == int(3950 * 0.1)
    # Pure noise separates no better than chance on held-out samples.
    noise = fit_boundary(latents, rng.standard_normal(4000), ratio=0.1, seed=0)
    assert noise.validation_accuracy < 0.7
    with pytest.raises(AdvfaceError, match="Received: ratio=0.7"):
        fit_boundary(latents, scores, ratio=0.7)


def test_shipped_interfacegan_directions_are_the_originals():
    directions = load_directions("stylegan-ffhq")
    assert directions.names == ("age", "eyeglasses", "gender", "pose", "smile")
    assert directions.matrix.shape == (5, 512) and directions.latent_space == "w"
    expected = {
        "age": "bfa106fb76d9b7e68b66e5b789f03361",
        "eyeglasses": "20e4ef70e8d07f623585acb21e33ed08",
        "gender": "f8a87ca292ba144d2d67d795c134371e",
        "pose": "d97ba386725f1e1589b78f67925fcdc8",
        "smile": "666caa328ffc558e0f79e830efb50883",
    }
    folder = load_directions.__globals__["DATA"] / "stylegan-ffhq"
    for name, md5 in expected.items():
        assert hashlib.md5((folder / f"{name}.npy").read_bytes()).hexdigest() == md5
    # reference/algorithms.md 2.4: not orthogonal, age.eyeglasses 0.101, gender.smile -0.113.
    gram = directions.gram()
    assert abs(gram[0, 1] - 0.101) < 5e-4 and abs(gram[2, 4] + 0.113) < 5e-4
    assert "MIT" in directions.provenance


def test_directions_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((2, 8))
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    saved = Directions("g", "z", ("a", "b"), matrix, np.array([1.0, 2.0]), {"a": {"x": 1}, "b": {}}, "test")
    saved.save(tmp_path / "d")
    loaded = load_directions(tmp_path / "d")
    np.testing.assert_array_equal(loaded.matrix, matrix)
    assert loaded.meta["a"] == {"x": 1} and loaded.subset(["b"]).names == ("b",)
    with pytest.raises(AdvfaceError, match="Received: attribute='c'. Known: a, b"):
        loaded.vector("c")
    with pytest.raises(AdvfaceError, match="one of these generators: digiface-dcgan, stylegan-ffhq"):
        load_directions(tmp_path / "nothing")
    np.save(tmp_path / "d" / "a.npy", matrix[:1] * 2)
    with pytest.raises(AdvfaceError, match="unit vectors"):
        load_directions(tmp_path / "d")


def test_shipped_yaw_direction_turns_the_head_monotonically():
    """Issue 6's bar: along the learned yaw direction the measured yaw changes monotonically."""
    from advface.generators import GENERATORS, load_generator
    from advface.semantic.learn import check_direction

    generator = load_generator("digiface-dcgan")
    directions = load_directions("digiface-dcgan")
    assert directions.names == scorers.ATTRIBUTES
    for name in directions.names:
        assert directions.meta[name]["svm_validation_accuracy"] > 0.8
    box = GENERATORS["digiface-dcgan"].face_box
    check = check_direction(generator, directions.vector("yaw"), directions.sigmas[0], "yaw", seed=7, box=box)
    assert len(check.spearman) == 16
    assert check.median >= 0.8 and check.mean >= 0.8
    # The head turns by tens of degrees over -3 .. +3 sigma.
    assert np.nanmedian(check.measured[:, -1] - check.measured[:, 0]) > 30


def test_directions_command_learns_resumes_and_draws(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["semantic", "directions", "--num-samples", "600", "--batch-size", "200", "--attributes", "yaw"]
    assert main([*args, "--out", str(out)]) == 0
    first = np.load(out / "directions" / "yaw.npy")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["directions"]["yaw"]["svm_validation_accuracy"] > 0.8
    assert (out / "sweeps" / "yaw.png").is_file() and "SVM val acc" in capsys.readouterr().out
    # Kill in the middle of the second chunk: the rows kept, a torn last line; the rerun completes it.
    lines = (out / "scores.tsv").read_text().splitlines(keepends=True)
    (out / "scores.tsv").write_text("".join(lines[:301]) + lines[301][:9])
    assert main([*args, "--out", str(out)]) == 0
    rows = (out / "scores.tsv").read_text().splitlines()[1:]
    assert len(rows) == 600 and len({r.split("\t")[0] for r in rows}) == 600
    np.testing.assert_array_equal(np.load(out / "directions" / "yaw.npy"), first)
    # Bad arguments are refused before any work, leaving no run folder behind.
    assert main([*args, "--ratio", "0.9", "--out", str(tmp_path / "bad")]) == 2
    assert main([*args, "--batch-size", "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists() and "Received: ratio=0.9" in capsys.readouterr().err
    # Other arguments in the same folder are refused.
    assert main([*args[:-1], "pitch", "--out", str(out)]) == 2
    assert "other arguments" in capsys.readouterr().err


def test_sample_command_writes_a_grid(tmp_path):
    assert main(["semantic", "sample", "-n", "5", "--seed", "3", "--out", str(tmp_path / "g.png")]) == 0
    grid = load_image(tmp_path / "g.png")
    assert grid.shape == (2 * 128, 3 * 128, 3)  # 5 faces: 2 rows of 3, 64 px drawn at 128
    assert np.load(tmp_path / "g.latents.npy").shape == (5, 100)
