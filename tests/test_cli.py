"""The command line as a user meets it: real files, real exit codes, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def advface(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "advface.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


def assert_one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("advface: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in errors[0]


def test_verify_same_and_different(samples):
    same = advface("verify", samples / "obama.jpg", samples / "obama2.jpg")
    assert same.returncode == 0 and same.stdout.startswith("same person"), same.stderr
    different = json.loads(advface("verify", samples / "obama.jpg", samples / "biden.jpg", "--json").stdout)
    assert different["same"] is False and different["distance"] > different["threshold"] == 0.6


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image\n")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(folder / "noface.png")
    return folder


@pytest.mark.parametrize(
    "name, words",
    [
        ("empty.jpg", ["empty.jpg", "0 bytes"]),
        ("text.png", ["text.png", "not an image"]),
        ("missing.jpg", ["missing.jpg", "not found"]),
        ("noface.png", ["No face found", "noface.png"]),
    ],
)
def test_bad_inputs_get_one_line_and_exit_2(samples, bad_files, name, words):
    assert_one_line_error(advface("verify", bad_files / name, samples / "biden.jpg"), *words)


def test_align_reports_no_face_explicitly(samples, bad_files, tmp_path):
    result = advface("align", samples / "obama.jpg", bad_files / "noface.png", "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records[0]["faces"]) == 1 and records[1]["faces"] == []
    assert (tmp_path / "obama_0.png").exists() and (tmp_path / "faces.json").exists()


def test_identify_against_a_flat_gallery(samples):
    result = json.loads(advface("identify", samples / "obama3.jpg", "--gallery", samples, "--json").stdout)
    assert result["label"] == "obama" and result["accepted"]


def test_zoo_list_and_unknown_model(samples):
    rows = json.loads(advface("zoo", "list", "--json").stdout)
    assert rows[0]["name"] == "dlib-resnet" and rows[0]["available"] and rows[0]["threshold"] == 0.6
    assert_one_line_error(
        advface("verify", samples / "obama.jpg", samples / "biden.jpg", "--model", "nope"),
        "Known: dlib-resnet",
    )


def test_help_ends_with_examples():
    for command in ("align", "verify", "identify", "demo"):
        text = advface(command, "--help").stdout
        assert "examples:" in text and "advface " + command in text.split("examples:")[1]
