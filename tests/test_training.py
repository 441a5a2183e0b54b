"""Training on a folder of real faces, registering in saved-models, and loading back through the zoo."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from advface.errors import AdvfaceError


@pytest.fixture(scope="module")
def people(samples, tmp_path_factory):
    """people/<identity>/*.jpg from the sample faces (3 identities, real photos plus augmented copies, as
    the demo uses them) and one unreadable file."""
    from advface.demo import sample_people

    root = sample_people(samples, tmp_path_factory.mktemp("people"))
    (root / "obama" / "notes.jpg").write_text("not an image")  # skipped, reported
    return root


@pytest.mark.slow
def test_train_classifier_registers_and_loads_back(people, models, tmp_path, aligner):
    from advface.training import train_classifier
    from advface.zoo import load_model, model_names

    calls = []
    result = train_classifier(
        people,
        name="three-people",
        run_dir=tmp_path / "run",
        epochs=12,
        batch_size=8,
        learning_rate=1e-2,
        seed=1,
        progress=calls.append,
    )
    assert result.labels == ("biden", "eileen_collins", "obama")
    assert result.sizes["train"] + result.sizes["validation"] == 16
    assert result.sizes["validation"] >= 3
    assert [str(p.name) for p, _ in result.skipped] == ["notes.jpg"]
    assert result.metrics["train_accuracy"] == 1.0
    assert result.metrics["validation_accuracy"] == 1.0
    assert result.confusion.trace() == result.sizes["validation"]
    train_steps = [p for p in calls if p.stage == "train"]
    assert [p.step for p in train_steps] == list(range(1, 13))
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(train_steps[-1].metrics)

    # The run folder and the register.
    run = tmp_path / "run"
    for name in ("config.json", "history.csv", "confusion.tsv", "skipped.tsv", "summary.json"):
        assert (run / name).is_file(), name
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 12
    row = [
        line for line in (models / "MODELS.md").read_text().splitlines() if "three-people.weights.h5" in line
    ]
    assert len(row) == 1 and "advface train classifier" in row[0]
    assert "three-people" in model_names()

    # Loads back through the zoo as a classifier and recognises held-out photos of each person.
    model = load_model("three-people")
    assert model.kind == "classifier" and model.labels == result.labels
    chips = np.stack(
        [
            aligner.align_one(np.asarray(Image.open(people / p / "00.jpg"), np.float32) / 255, "dlib").chip
            for p in result.labels
        ]
    )
    decisions = model.classify(chips)
    assert [d.label for d in decisions] == list(result.labels)
    assert all(d.probability > 0.5 for d in decisions), decisions


@pytest.mark.slow
def test_rerun_in_the_same_run_folder_continues_from_the_last_finished_epoch(people, models, tmp_path):
    from advface.training import train_classifier

    run = tmp_path / "run"
    train_classifier(people, name="resume", run_dir=run, epochs=3, batch_size=8, augment=False)
    first = (run / "history.csv").read_text().strip().splitlines()
    assert len(first) == 1 + 3
    # Same run folder, more epochs: continues at epoch 4 (what re-running after a kill does).
    train_classifier(
        people, name="resume", run_dir=run, epochs=5, batch_size=8, augment=False, overwrite=True
    )
    rows = (run / "history.csv").read_text().strip().splitlines()
    epochs = [int(line.split(",")[0]) for line in rows[1:] if line and line[0].isdigit()]
    assert epochs == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_train_siamese_gives_an_embedding_model(people, models, tmp_path, aligner):
    from advface.training import train_siamese
    from advface.zoo import load_model

    result = train_siamese(people, name="siam", run_dir=tmp_path / "siam", epochs=4, batch_size=8, seed=0)
    assert result.sizes["train"] > 0 and (tmp_path / "siam" / "pairs.tsv").is_file()
    pairs = (tmp_path / "siam" / "pairs.tsv").read_text().splitlines()[1:]
    by_split = {}
    for line in pairs:
        split, a, b, _ = line.split("\t")
        by_split.setdefault(split, set()).update({a.split(os.sep)[-2], b.split(os.sep)[-2]})
    # Identities are disjoint across train / validation / test.
    assert not (by_split["train"] & by_split.get("validation", set()))
    assert not (by_split["train"] & by_split.get("test", set()))
    model = load_model("siam")
    assert model.kind == "embedding" and model.spec.distance == "cosine"
    assert model.threshold == pytest.approx(result.metrics["threshold"])
    chip = aligner.align_one(np.asarray(Image.open(people / "obama" / "00.jpg"), np.float32) / 255).chip
    emb = model.embed(chip[None])
    assert emb.shape == (1, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_training_argument_errors(people, models, tmp_path):
    from advface.training import train_classifier

    with pytest.raises(AdvfaceError, match=r"Received: split='identity'.*train siamese"):
        train_classifier(people, name="x", run_dir=tmp_path / "r", split="identity")
    with pytest.raises(AdvfaceError, match=r"Received: name='dlib-resnet'"):
        train_classifier(people, name="dlib-resnet", run_dir=tmp_path / "r")
    with pytest.raises(AdvfaceError, match=r"Received: epochs=0"):
        train_classifier(people, name="x", run_dir=tmp_path / "r", epochs=0)
    lonely = tmp_path / "lonely"
    (lonely / "only").mkdir(parents=True)
    with pytest.raises(AdvfaceError, match=r"at least 2 identity sub-folders"):
        train_classifier(lonely, name="x", run_dir=tmp_path / "r")
    (lonely / "blank").mkdir()
    Image.new("RGB", (200, 200), "gray").save(lonely / "blank" / "1.jpg")
    Image.new("RGB", (200, 200), "gray").save(lonely / "only" / "1.jpg")
    with pytest.raises(AdvfaceError, match=r"No usable face in the photos of blank, only"):
        train_classifier(lonely, name="x", run_dir=tmp_path / "r")


def test_cli_train_refuses_identity_split_with_one_line(people, models, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "advface.cli",
            "train",
            "classifier",
            "--data",
            str(people),
            "--name",
            "x",
            "--split",
            "identity",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("advface: error:")]
    assert len(errors) == 1 and "train siamese" in errors[0]
    assert "Traceback" not in result.stderr
