"""``advface attack``: the issue's bars through the command line (every sample face dodged at 4/255,
Obama taken for Biden at 8/255), run folders, resume after ``kill -9``, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import advface, assert_one_line_error

from advface.images import load_image


def _rows(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]


def test_pgd_at_4_255_dodges_every_sample_face(samples, tmp_path):
    out = tmp_path / "pgd"
    r = advface("attack", "pgd", "--images", samples, "--epsilon", "4/255", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    rows = _rows(out / "results.tsv")
    faces = [row for row in rows if row["status"] == "ok"]
    assert len(faces) == len(rows) == 8  # every sample image has a face
    print({Path(row["image"]).stem: round(float(row["score"]), 3) for row in faces})
    for row in faces:
        assert row["success"] == "1" and row["success_8bit"] == "1", row
        assert float(row["score"]) > 0.6  # distance from its own clean embedding
        assert float(row["linf"]) <= 4 / 255 + 1e-6
    assert summary["success_rate"] == 1.0 and summary["flags"] == []
    # The run folder a person opens.
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 0 and config["arguments"]["epsilon"] == "4/255"  # as typed
    assert "tensorflow" in json.dumps(config["packages"])
    stem = "0003_obama"
    clean = load_image(out / "images" / f"{stem}_clean.png")
    adversarial = load_image(out / "images" / f"{stem}_adversarial.png")
    assert clean.shape == adversarial.shape == (150, 150, 3)
    assert 0 < np.abs(adversarial - clean).max() <= 4 / 255 + 1.5 / 255  # 8-bit files
    assert (out / "images" / f"{stem}_perturbation.png").is_file() and (out / "scores.png").is_file()


def test_pgd_at_8_255_makes_obama_pass_for_biden(samples, tmp_path):
    out = tmp_path / "imp"
    obamas = [samples / f"obama{s}.jpg" for s in ("", "2", "3")]
    r = advface(
        "attack", "pgd", "--goal", "impersonate", "--images", *obamas, "--targets", samples / "biden.jpg",
        "--epsilon", "8/255", "--out", out, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = _rows(out / "results.tsv")
    print([(Path(x["image"]).stem, x["clean_score"], x["score"]) for x in rows])
    for row in rows:
        assert float(row["clean_score"]) > 0.6  # not Biden before
        assert row["success"] == "1" and row["success_8bit"] == "1" and float(row["score"]) <= 0.6


def test_misidentify_against_a_gallery_folder(samples, tmp_path):
    people = tmp_path / "people"
    for name, files in {"obama": ["obama.jpg", "obama2.jpg"], "biden": ["biden.jpg"]}.items():
        (people / name).mkdir(parents=True)
        for f in files:
            (people / name / f).write_bytes((samples / f).read_bytes())
    (people / "astronaut").mkdir()
    (people / "astronaut" / "astronaut.png").write_bytes((samples / "astronaut.png").read_bytes())
    out = tmp_path / "mis"
    r = advface(
        "attack", "pgd", "--goal", "misidentify", "--images", samples / "obama3.jpg", "--gallery", people,
        "--epsilon", "4/255", "--steps", "20", "--out", out, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (row,) = _rows(out / "results.tsv")
    assert row["label"] == "obama" and row["success"] == "1"


def test_sweep_writes_a_curve_and_minimal_budgets(samples, tmp_path):
    out = tmp_path / "sweep"
    r = advface(
        "attack", "sweep", "fgsm", "--images", samples / "obama.jpg", samples / "biden.jpg",
        "--epsilons", "0.25/255,8/255", "--out", out, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["epsilons"] == pytest.approx([0.25 / 255, 8 / 255])
    assert summary["success_rates"][0] <= summary["success_rates"][1]
    assert len(_rows(out / "results.tsv")) == 4
    assert (out / "curve.png").is_file() and len((out / "curve.tsv").read_text().splitlines()) == 3
    assert len((out / "minimal.tsv").read_text().splitlines()) == 3


def test_a_killed_run_resumes_without_redoing_or_duplicating_rows(samples, tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable, "-m", "advface.cli", "attack", "pgd", "--images", str(samples), "--epsilon", "4/255",
        "--steps", "30", "--batch-size", "1", "--out", str(out),
    ]  # fmt: skip
    table = out / "results.tsv"
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and (not table.is_file() or len(_rows(table)) < 3):
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    before = _rows(table)
    assert 3 <= len(before) < 8, "the run should have been killed half-way"
    r = subprocess.run(args + ["--json"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    after = _rows(table)
    keys = [row["key"] for row in after]
    assert len(keys) == len(set(keys)) == 8
    assert after[: len(before)] == before  # finished rows were kept, not redone
    assert json.loads(r.stdout)["success_rate"] == 1.0
    # The same command once more has nothing left to do and changes nothing.
    assert subprocess.run(args, capture_output=True, timeout=900).returncode == 0
    assert _rows(table) == after


def test_attack_errors_are_one_line(samples, tmp_path):
    obama = samples / "obama.jpg"
    assert_one_line_error(
        advface("attack", "pgd", "--images", obama, "--queries", "100", "--out", tmp_path / "a"),
        "PGD does not take queries",
    )
    assert_one_line_error(
        advface("attack", "pgd", "--images", obama, "--epsilon", "8/0", "--out", tmp_path / "b"), "8/255"
    )
    assert_one_line_error(
        advface("attack", "pgd", "--images", obama, "--goal", "misidentify", "--out", tmp_path / "c"),
        "--gallery",
    )
    assert_one_line_error(
        advface("attack", "cw", "--images", obama, "--norm", "linf", "--out", tmp_path / "d"), "norm='linf'"
    )
    out = tmp_path / "f"
    refused = advface("attack", "fgsm", "--images", obama, "--mask", "nose", "--out", out)
    assert_one_line_error(refused, "eyeglasses")
    assert_one_line_error(
        advface("attack", "fgsm", "--images", obama, tmp_path / "typo.jpg", "--out", tmp_path / "g"),
        "typo.jpg",
    )
    # A photo without a usable face gets its row; the others are attacked.
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    # In the folder the refused start above named: it left nothing behind that blocks this run.
    r = advface("attack", "fgsm", "--images", empty, obama, "--out", out)
    assert r.returncode == 0, r.stderr
    status = {Path(row["image"]).name: row["status"] for row in _rows(out / "results.tsv")}
    assert status["obama.jpg"] == "ok" and status["empty.jpg"] != "ok"
    # Other arguments on the same folder are refused.
    assert_one_line_error(
        advface("attack", "fgsm", "--images", empty, obama, "--epsilon", "2/255", "--out", out),
        "other arguments",
    )
