"""Semantic runs end to end on the offline defaults: chunked attacks and certificates, kills, merges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from advface.chunks import Chunk, load_chunks
from advface.cli import build_parser, main
from advface.errors import AdvfaceError
from advface.runs import ResultsTable
from advface.semantic.identities import generate_identities
from advface.semantic.workflow import CERTIFY_COLUMNS, build_setup, evaluate, run_attack, run_certification

PGD = {"steps": 3, "restarts": 2, "batch_size": 4}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("semantic") / "run"
    generate_identities(folder, "digiface-dcgan", "dlib-resnet", 24, seed=0)
    return folder


@pytest.fixture(scope="module")
def setup(run):
    return build_setup(run)


def _advface(*args) -> list[str]:
    return [sys.executable, "-m", "advface.cli", *map(str, args)]


def _merged(folder):
    chunks = load_chunks(folder)
    return {k: np.concatenate([c[k] for c in chunks]) for k in ("rows", "deltas", "success", "magnitudes")}


def test_a_killed_chunked_attack_resumes_to_the_uninterrupted_result(run, setup):
    # Uninterrupted, in one chunk.
    run_attack(run, "pgd", instances=8, settings=PGD, name="whole", setup=setup)
    # In two chunks; the second is killed with SIGKILL while it runs, then started again.
    run_attack(run, "pgd", instances=8, settings=PGD, name="split", chunk=Chunk(0, 2), setup=setup)
    flags = ["--attack", "pgd", "--instances", 8, "--steps", 3, "--restarts", 2, "--batch-size", 4]
    command = _advface("semantic", "attack", run, *flags, "--name", "split", "--chunks", 2, "--chunk", 1)
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = b"", time.time() + 120
    while b"latent-pgd" not in seen and time.time() < deadline:  # the attack's progress bar: it has begun
        data = os.read(job.stderr.fileno(), 4096)
        if not data:
            break
        seen += data
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    job.stderr.close()
    assert not (run / "attacks" / "split" / "chunk-00001-of-00002.npz").exists(), "killed too late to test"
    # Meanwhile eval reports the missing chunk instead of failing.
    partial = evaluate(run, figures=0)["attacks"]["split"]
    assert (partial["chunks"], partial["expected_chunks"], partial["instances"]) == (1, 2, 4)
    assert subprocess.run(command, capture_output=True).returncode == 0
    whole, split = _merged(run / "attacks" / "whole"), _merged(run / "attacks" / "split")
    np.testing.assert_array_equal(split["rows"], np.arange(8))
    np.testing.assert_array_equal(split["success"], whole["success"])
    np.testing.assert_allclose(split["deltas"], whole["deltas"], atol=1e-5)
    # A finished chunk is not redone; other arguments on the same folder are refused.
    before = (run / "attacks" / "split" / "chunk-00001-of-00002.npz").stat().st_mtime_ns
    run_attack(run, "pgd", instances=8, settings=PGD, name="split", chunk=Chunk(1, 2), setup=setup)
    assert (run / "attacks" / "split" / "chunk-00001-of-00002.npz").stat().st_mtime_ns == before
    assert (
        main(["semantic", "attack", str(run), *map(str, flags[:-2]), "--batch-size", "2", "--name", "split"])
        == 2
    )


def test_workers_split_a_job_over_local_processes_with_the_same_results(run, setup):
    run_attack(run, "pgd", instances=8, settings=PGD, name="whole", setup=setup)
    flags = ["--attack", "pgd", "--instances", "8", "--steps", "3", "--restarts", "2", "--batch-size", "4"]
    # One job of a 1-way split, run as 2 worker processes (one per GPU where there are GPUs).
    assert main(["semantic", "attack", str(run), *flags, "--name", "workers", "--workers", "2"]) == 0
    files = sorted(p.name for p in (run / "attacks" / "workers").glob("chunk-*.npz"))
    assert files == ["chunk-00000-of-00002.npz", "chunk-00001-of-00002.npz"]
    whole, workers = _merged(run / "attacks" / "whole"), _merged(run / "attacks" / "workers")
    np.testing.assert_array_equal(workers["success"], whole["success"])
    np.testing.assert_allclose(workers["deltas"], whole["deltas"], atol=1e-5)


def test_a_killed_certification_resumes_row_by_row(run, setup):
    settings = {"sigma": 0.5, "n0": 50, "n": 400, "instances": 4, "setup": setup}
    run_certification(run, name="whole", **settings)
    command = _advface(
        "semantic",
        "certify",
        run,
        "--sigma",
        0.5,
        "--n0",
        50,
        "--n",
        400,
        "--instances",
        4,
        "--name",
        "split",
    )
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table = run / "certify" / "split" / "chunk-00000-of-00001.tsv"
    deadline = time.time() + 120
    while time.time() < deadline and not (table.exists() and table.read_text().count("\n") >= 2):
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    done = table.read_text().count("\n") - 1
    assert 1 <= done < 4, "killed too late to test"
    run_certification(run, name="split", **settings)
    whole = ResultsTable(run / "certify" / "whole" / "chunk-00000-of-00001.tsv", CERTIFY_COLUMNS).rows()
    split = ResultsTable(table, CERTIFY_COLUMNS).rows()
    assert [r["idx"] for r in split] == ["0", "1", "2", "3"]
    for a, b in zip(whole, split, strict=True):
        assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}


def test_eval_writes_the_sources_results_and_figures(run, setup):
    run_attack(run, "fab", instances=6, settings={"steps": 5, "restarts": 1, "targets": 2}, setup=setup)
    summary = evaluate(run, figures=3)
    fab = summary["attacks"]["fab"]
    assert fab["instances"] == 6 and fab["successes"] >= 3  # FAB is unbounded: it should fool most
    text = (run / "attacks" / "fab" / "results.txt").read_text()
    assert text.startswith(f"successes:{fab['successes']}\ninstances:6\nrate:")
    assert "importance-order:" in text and "order-pvals:" in text
    assert (run / "acc_vs_pert.png").stat().st_size > 5000
    figures = list((run / "attacks" / "fab" / "figs").glob("ori_*_adv_*.png"))
    assert 1 <= len(figures) <= 3
    # The stored deltas really fool the face model: re-judged from scratch.
    merged = _merged(run / "attacks" / "fab")
    predicted = setup.objective.predict(merged["deltas"].astype(np.float32), merged["rows"].astype(np.int32))
    np.testing.assert_array_equal(predicted != setup.objective.labels(merged["rows"]), merged["success"])


def test_eval_handles_ablations_verification_and_bad_splits(run):
    fab = {"steps": 5, "restarts": 1, "targets": 2}
    run_attack(run, "fab", instances=4, attributes=["yaw"], settings=fab, name="yaw-only")
    run_attack(run, "fab", instances=4, attributes=["yaw", "smile"], settings=fab, name="two")
    run_attack(run, "pgd", instances=4, mode="verify", budget=3.0, settings=PGD, name="verify")
    summary = evaluate(run, figures=2)
    assert summary["attacks"]["yaw-only"]["ranking"] == []  # one attribute: nothing to rank
    assert "importance-order:NoneFound" in (run / "attacks" / "yaw-only" / "results.txt").read_text()
    for name in ("yaw-only", "two"):
        assert summary["attacks"][name]["successes"] >= 1
        assert list((run / "attacks" / name / "figs").glob("ori_*_adv_*.png"))
    if summary["attacks"]["verify"]["successes"]:
        names = [p.name for p in (run / "attacks" / "verify" / "figs").iterdir()]
        assert names and all(n.endswith("_adv_verify.png") for n in names)
    with pytest.raises(AdvfaceError, match="Received: chunks=5, instances=4"):
        run_attack(run, "pgd", instances=4, chunk=Chunk(4, 5), settings=PGD, name="empty")


def test_too_few_samples_are_warned_about(run, setup):
    with pytest.warns(UserWarning, match="Use n >= 10"):
        path = run_certification(run, sigma=0.5, n0=5, n=5, instances=1, name="guard", setup=setup)
    assert ResultsTable(path, CERTIFY_COLUMNS).rows()[0]["predict"] == "-1"  # abstains


def test_the_certify_command_says_too_few_samples_in_one_line_and_restores_warnings(run, capsys):
    import warnings

    before = (warnings.showwarning, list(warnings.filters))
    flags = ["--sigma", "0.5", "--n0", "5", "--n", "5", "--instances", "1", "--name", "guard-cli"]
    assert main(["semantic", "certify", str(run), *flags]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert err == [
        "advface: warning: n=5 samples cannot certify anything at alpha=0.001: even 5 of 5 votes give a "
        "lower bound below 1/2. Use n >= 10 (every identity will abstain)."
    ]
    assert (warnings.showwarning, list(warnings.filters)) == before


@pytest.mark.slow
def test_certifying_one_identity_with_ten_thousand_samples_takes_under_two_minutes(run, setup):
    start = time.perf_counter()
    path = run_certification(run, sigma=0.5, n0=100, n=10_000, instances=1, name="speed", setup=setup)
    seconds = time.perf_counter() - start
    row = ResultsTable(path, CERTIFY_COLUMNS).rows()[0]
    print(f"N=10,000 certificate: {seconds:.1f} s, radius {row['radius']}, p_lower {row['p_lower']}")
    assert seconds < 120
    assert row["predict"] == row["label"] and float(row["radius"]) > 0


def test_fanned_out_children_are_single_workers_whatever_the_flag_was_typed_as(monkeypatch):
    """argparse accepts abbreviations (--work 2); a child that kept one would fan out again, forever."""
    import advface.chunks as chunks

    started = []

    class Child:
        def __init__(self, command, env):
            started.append((command, env.get("CUDA_VISIBLE_DEVICES")))

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Child)
    monkeypatch.setattr(chunks, "local_gpus", lambda: ["0", "1"])
    argv = ["semantic", "attack", "RUN", "--work", "2", "--chunks=3", "--chunk", "1", "--steps", "5"]
    assert chunks.fan_out(argv, 2, Chunk(1, 3)) == 0
    for g, (command, gpu) in enumerate(started):
        args = build_parser().parse_args(command[3:])
        assert (args.workers, args.chunks, args.chunk, args.steps) == (1, 6, 2 + g, 5)
        assert gpu == str(g) and "--chunks=3" not in command
