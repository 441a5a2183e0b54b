"""Cluster chunks, the differentiable latent -> embedding pipeline, its objective, and generated identities.

Everything runs on the real defaults: the digiface-dcgan generator, dlib's 5-point landmarks and the
dlib-resnet face model.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from advface import chunks as chunks_module
from advface.chunks import Chunk, chunk_from_args, load_chunks, save_npz_atomic
from advface.cli import main
from advface.errors import AdvfaceError
from advface.generators import GENERATORS, load_generator
from advface.semantic.directions import load_directions
from advface.semantic.identities import Identities, generate_identities, identity_latents, load_identities
from advface.semantic.pipeline import FacePipeline, SemanticObjective, warp_chips

GENERATOR, MODEL = "digiface-dcgan", "dlib-resnet"

# -- chunks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "count"), [(10, 3), (12, 3), (7, 7), (5, 1), (1001, 7), (3, 5), (0, 2)])
def test_chunks_cover_every_row_once(n, count):
    parts = [Chunk(i, count).rows(n) for i in range(count)]
    assert [list(p) for p in parts] == [list(a) for a in np.array_split(np.arange(n), count)]
    assert sorted(r for p in parts for r in p) == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_chunk_names_and_errors():
    assert Chunk(3, 10).name == "chunk-00003-of-00010"
    assert Chunk(np.int64(2), np.int64(4)).name == "chunk-00002-of-00004"
    with pytest.raises(AdvfaceError, match=r"Received: chunk=3, chunks=3"):
        Chunk(3, 3)
    with pytest.raises(AdvfaceError, match=r"Received: chunks=0"):
        Chunk(0, 0)
    with pytest.raises(AdvfaceError, match=r"Received: chunk=-1"):
        Chunk(-1, 2)


def test_chunk_defaults_come_from_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT", raising=False)
    assert chunk_from_args(None, None) == Chunk(0, 1)
    assert chunk_from_args(5, 2) == Chunk(2, 5)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert chunk_from_args(None, None) == Chunk(2, 4)
    assert chunk_from_args(10, None) == Chunk(2, 10)  # --chunks given, index from the array
    assert chunk_from_args(None, 0) == Chunk(0, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")  # an array counted from 1
    with pytest.raises(AdvfaceError, match=r"Received: chunk=4, chunks=4.*--array=0-3"):
        chunk_from_args(None, None)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "x")
    with pytest.raises(AdvfaceError, match=r"Received: SLURM_ARRAY_TASK_ID='x'"):
        chunk_from_args(None, None)


def test_atomic_save_leaves_no_file_when_interrupted(tmp_path, monkeypatch):
    final = tmp_path / "out" / "chunk-00000-of-00002.npz"

    def dies_half_way(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # as if the job were stopped in the middle of writing

    monkeypatch.setattr(chunks_module.np, "savez", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_npz_atomic(final, rows=np.arange(3))
    assert not final.exists()
    assert list(final.parent.iterdir()) == []  # the temporary file went too
    monkeypatch.undo()

    assert save_npz_atomic(final, rows=np.arange(3)) == final
    assert [p.name for p in final.parent.iterdir()] == [final.name]
    # A process killed with -9 leaves its temporary file: readers ignore it.
    (final.parent / f".{final.name}.tmp-123-dead").write_bytes(b"PK\x03\x04 half")
    [loaded] = load_chunks(final.parent)
    np.testing.assert_array_equal(loaded["rows"], np.arange(3))


def test_load_chunks_sorts_and_refuses_overlaps_and_mixed_splits(tmp_path):
    save_npz_atomic(tmp_path / "a" / "chunk-00001-of-00002.npz", rows=np.arange(3, 6))
    save_npz_atomic(tmp_path / "a" / "chunk-00000-of-00002.npz", rows=np.arange(0, 3))
    assert [c["rows"][0] for c in load_chunks(tmp_path / "a")] == [0, 3]
    assert load_chunks(tmp_path / "empty") == []

    save_npz_atomic(tmp_path / "b" / "chunk-00000-of-00002.npz", rows=np.arange(0, 3))
    save_npz_atomic(tmp_path / "b" / "chunk-00001-of-00002.npz", rows=np.arange(2, 5))
    with pytest.raises(AdvfaceError, match=r"row 2 is in chunk-00000-of-00002.npz and chunk-00001"):
        load_chunks(tmp_path / "b")

    save_npz_atomic(tmp_path / "c" / "chunk-00000-of-00002.npz", rows=np.arange(0, 3))
    save_npz_atomic(tmp_path / "c" / "chunk-00002-of-00003.npz", rows=np.arange(4, 6))
    with pytest.raises(AdvfaceError, match=r"Received: chunk counts \[2, 3\]"):
        load_chunks(tmp_path / "c")

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "chunk-last.npz").write_bytes(b"")
    with pytest.raises(AdvfaceError, match=r"Received: file='chunk-last.npz'"):
        load_chunks(tmp_path / "d")


# -- the pipeline ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline():
    return FacePipeline(GENERATOR, MODEL, directions=load_directions(GENERATOR))


@pytest.fixture(scope="module")
def run(tmp_path_factory, pipeline):
    """12 identities made as 3 chunks of 4 (batches of 4)."""
    out = tmp_path_factory.mktemp("identities")
    for i in range(3):
        generate_identities(out, GENERATOR, MODEL, 12, seed=5, chunk=Chunk(i, 3), batch_size=4)
    return out


def test_embedding_matches_advface_chips(pipeline):
    from advface.alignment import FaceAligner

    latents = pipeline.generator.sample(6, seed=11)
    alignments = pipeline.alignments(latents)
    assert alignments.shape == (6, 2, 3) and alignments.dtype == np.float32
    # advface's own non-differentiable path: render, dlib's chip of the same face, embed.
    images = pipeline.generator.images(latents)
    aligner = FaceAligner()
    box = GENERATORS[GENERATOR].face_box
    chips = []
    for image in images:
        face = aligner.face_in_box(image, tuple(v * image.shape[0] for v in box))
        chips.append(aligner.chip(image, face, pipeline.model.template))
    reference = pipeline.model.embed(np.stack(chips))
    ours = pipeline.embed(latents, alignments).numpy()
    distance = np.linalg.norm(ours - reference, axis=1)
    print(f"max distance, differentiable warp vs dlib chips: {distance.max():.2e} (dlib threshold 0.6)")
    assert distance.max() < 0.05
    assert distance.max() < 1e-3  # the warp samples as dlib does: the chips agree to float round-off
    np.testing.assert_allclose(pipeline.chips(latents, alignments).numpy(), np.stack(chips), atol=1e-4)
    # Alignment is measured on the clean render and held fixed: the matrices do not move with delta.
    np.testing.assert_array_equal(pipeline.alignments(latents), alignments)


def test_warp_gradient_is_the_exact_adjoint():
    rng = np.random.default_rng(3)
    images = rng.random((2, 40, 50, 3)).astype(np.float32)
    upstream = rng.normal(size=(2, 60, 60, 3)).astype(np.float32)
    angle, scale = 0.3, 2.3  # enlarges and turns; part of each chip falls outside its image (black)
    turn = scale * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    matrices = np.stack([np.c_[turn, [-20.0, -35.0]], np.c_[turn.T, [10.0, -60.0]]]).astype(np.float32)
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        chips = warp_chips(x, matrices, 60)
        inner = tf.reduce_sum(chips * upstream)
    gradient = tape.gradient(inner, x).numpy()
    assert np.mean(chips.numpy() == 0) > 0.05  # the black border is there
    # <W x, y> == <x, W^T y>: the gradient of a linear map is its adjoint (float64 sums).
    np.testing.assert_allclose(
        np.sum(chips.numpy().astype(np.float64) * upstream),
        np.sum(images.astype(np.float64) * gradient),
        rtol=1e-5,
    )
    # The sampling is dlib's: a pixel fully inside the image is the bilinear mix of its four neighbours.
    inverse = np.linalg.inv(np.r_[matrices[0], [[0, 0, 1]]])
    px, py = (inverse @ [30.0, 30.0, 1.0])[:2]
    left, top = int(np.floor(px)), int(np.floor(py))
    fx, fy = px - left, py - top
    patch = images[0, top : top + 2, left : left + 2]
    expected = (1 - fy) * ((1 - fx) * patch[0, 0] + fx * patch[0, 1]) + fy * (
        (1 - fx) * patch[1, 0] + fx * patch[1, 1]
    )
    np.testing.assert_allclose(chips.numpy()[0, 30, 30], expected, atol=1e-5)


def test_perturb_and_gradients(pipeline):
    latents = pipeline.generator.sample(3, seed=2)
    alignments = pipeline.alignments(latents)
    np.testing.assert_array_equal(pipeline.perturb(latents, np.zeros((3, pipeline.k))).numpy(), latents)
    delta = np.zeros((3, pipeline.k), np.float32)
    delta[:, 1] = 0.5
    expected = latents + 0.5 * pipeline.directions.matrix[1].astype(np.float32)
    np.testing.assert_allclose(pipeline.perturb(latents, delta).numpy(), expected, atol=1e-6)

    @tf.function
    def grad(d):
        with tf.GradientTape() as tape:
            tape.watch(d)
            embeddings = pipeline.embed(pipeline.perturb(latents, d), alignments)
            loss = tf.reduce_sum(embeddings * tf.constant(np.linspace(-1, 1, 128), tf.float32))
        return tape.gradient(loss, d)

    g = grad(tf.constant(delta)).numpy()
    assert g.shape == (3, pipeline.k) and np.all(np.isfinite(g))
    assert np.all(np.abs(g).sum(axis=1) > 1e-4)

    bare = FacePipeline(pipeline.generator, pipeline.model)
    with pytest.raises(AdvfaceError, match=r"Received: directions=None"):
        bare.perturb(latents, delta)
    with pytest.raises(AdvfaceError, match=r"Received: directions for 'stylegan-ffhq'"):
        FacePipeline(pipeline.generator, pipeline.model, directions=load_directions("stylegan-ffhq"))


def test_identify_objective(pipeline, run):
    identities = load_identities(run)
    objective = SemanticObjective(pipeline, identities)
    assert objective.num_classes == 12 and objective.dimension == pipeline.k
    rows = np.arange(12)
    labels = objective.labels(rows)
    np.testing.assert_array_equal(labels, rows)
    clean = objective.predict(np.zeros((12, pipeline.k)), rows)
    share = float(np.mean(clean == labels))
    print(f"clean identities recognised as themselves: {share:.0%}")
    assert share >= 0.9
    # Logits are -dist / sqrt(D) to every gallery entry, compiled or not.
    delta = np.random.default_rng(0).normal(size=(4, pipeline.k)).astype(np.float32)
    some = np.array([3, 0, 7, 11], np.int32)
    logits = tf.function(objective.logits)(tf.constant(delta), tf.constant(some)).numpy()
    embeddings = pipeline.embed(
        pipeline.perturb(identities.latents[some], delta), identities.alignments[some]
    )
    distances = np.linalg.norm(embeddings.numpy()[:, None] - identities.embeddings[None], axis=-1)
    np.testing.assert_allclose(logits, -distances / np.sqrt(128), atol=1e-4)
    np.testing.assert_allclose(objective.logits(delta, some).numpy(), logits, atol=1e-5)

    # Gradients of the source's cross-entropy loss reach delta, also at delta = 0.
    @tf.function
    def grad(d, r):
        with tf.GradientTape() as tape:
            tape.watch(d)
            loss = tf.keras.losses.sparse_categorical_crossentropy(
                objective.labels(some), objective.logits(d, r), from_logits=True
            )
        return tape.gradient(loss, d)

    for start in (np.zeros_like(delta), delta):
        g = grad(tf.constant(start), tf.constant(some)).numpy()
        assert np.all(np.isfinite(g)) and np.all(np.abs(g).sum(axis=1) > 0)

    # A gallery of another identity set: entries by position, rows must be in it.
    part = identities.subset([4, 5, 6])
    np.testing.assert_array_equal(part.rows, [4, 5, 6])
    mixed = SemanticObjective(pipeline, part, gallery=identities)
    np.testing.assert_array_equal(mixed.labels([5, 6]), [5, 6])
    with pytest.raises(AdvfaceError, match=r"Received: rows=\[2\]"):
        mixed.labels([2])
    with pytest.raises(AdvfaceError, match=r"Received: mode='open'"):
        SemanticObjective(pipeline, identities, mode="open")


def test_verify_objective(pipeline, run):
    identities = load_identities(run)
    objective = SemanticObjective(pipeline, identities, mode="verify")
    assert objective.num_classes == 2 and objective.threshold == 0.6
    rows = np.array([0, 1, 2], np.int32)
    np.testing.assert_array_equal(objective.labels(rows), [0, 0, 0])
    zero = np.zeros((3, pipeline.k), np.float32)
    np.testing.assert_array_equal(objective.predict(zero, rows), [0, 0, 0])  # clean: the same person
    # A big move along the directions: the decision follows the distance to the clean embedding.
    far = np.full((3, pipeline.k), 4.0, np.float32)
    logits = objective.logits(far, rows).numpy()
    moved = pipeline.embed(pipeline.perturb(identities.latents[:3], far), identities.alignments[:3]).numpy()
    distance = np.linalg.norm(moved - identities.embeddings[:3], axis=1)
    np.testing.assert_allclose(logits[:, 0], -distance / np.sqrt(128), atol=1e-5)
    np.testing.assert_allclose(logits[:, 1], -0.6 / np.sqrt(128), atol=1e-7)
    cut = float(np.median(distance))
    strict = SemanticObjective(pipeline, identities, mode="verify", threshold=cut)
    np.testing.assert_array_equal(strict.predict(far, rows), (distance > cut).astype(int))
    with pytest.raises(AdvfaceError, match=r"Received: a gallery with mode='verify'"):
        SemanticObjective(pipeline, identities, mode="verify", gallery=identities.embeddings)
    with pytest.raises(AdvfaceError, match=r"Received: rows=\[12\]"):
        objective.logits(zero[:1], [12])


# -- generated identities ----------------------------------------------------------------------------------


def test_chunked_generation_equals_one_run(run, tmp_path):
    generate_identities(tmp_path, GENERATOR, MODEL, 12, seed=5, batch_size=4)
    whole, split = load_identities(tmp_path), load_identities(run)
    assert isinstance(split, Identities) and (split.generator, split.model, split.seed) == (
        GENERATOR,
        MODEL,
        5,
    )
    np.testing.assert_array_equal(split.rows, np.arange(12))
    np.testing.assert_array_equal(split.latents, whole.latents)
    np.testing.assert_array_equal(split.alignments, whole.alignments)
    np.testing.assert_allclose(split.embeddings, whole.embeddings, atol=1e-5)
    # Row r depends on (seed, r) only: drawn alone it is the same, with another seed it is not.
    generator = load_generator(GENERATOR)
    np.testing.assert_array_equal(identity_latents(generator, [7], 5)[0], whole.latents[7])
    assert not np.allclose(identity_latents(generator, [7], 6)[0], whole.latents[7])
    config = json.loads((run / "config.json").read_text())
    assert config["command"] == "semantic generate" and config["arguments"]["n"] == 12


def test_resume_after_a_killed_chunk(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = load_identities(out)
    # Kill chunk 1 half way: its file never got its name, a temporary file is left behind.
    (out / "identities" / "chunk-00001-of-00003.npz").unlink()
    (out / "identities" / ".chunk-00001-of-00003.npz.tmp-99-dead").write_bytes(b"PK\x03\x04 half")
    with pytest.raises(AdvfaceError, match=r"missing 1 of 3 chunks: chunk-00001-of-00003"):
        load_identities(out)
    partial = load_identities(out, complete=False)
    np.testing.assert_array_equal(partial.rows, [0, 1, 2, 3, 8, 9, 10, 11])

    events = []
    mtime = (out / "identities" / "chunk-00000-of-00003.npz").stat().st_mtime_ns
    for i in range(3):  # the array job runs again: finished chunks are skipped
        generate_identities(
            out, GENERATOR, MODEL, 12, seed=5, chunk=Chunk(i, 3), batch_size=4, progress=events.append
        )
    assert (out / "identities" / "chunk-00000-of-00003.npz").stat().st_mtime_ns == mtime
    assert [e.metrics.get("skipped") for e in events if "skipped" in e.metrics] == [4, 4]
    assert {e.stage for e in events} == {"identities"}
    after = load_identities(out)
    np.testing.assert_array_equal(after.rows, np.arange(12))
    np.testing.assert_array_equal(after.latents, before.latents)
    np.testing.assert_allclose(after.embeddings, before.embeddings, atol=1e-5)


def test_mismatched_arguments_are_refused(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    with pytest.raises(AdvfaceError, match=r"Received: n=13 \(run has 12\)"):
        generate_identities(out, GENERATOR, MODEL, 13, seed=5, chunk=Chunk(0, 3))
    with pytest.raises(AdvfaceError, match=r"Received: seed=6 \(run has 5\)"):
        generate_identities(out, GENERATOR, MODEL, 12, seed=6, chunk=Chunk(0, 3))
    with pytest.raises(AdvfaceError, match=r"3-way split. Received: chunks=4"):
        generate_identities(out, GENERATOR, MODEL, 12, seed=5, chunk=Chunk(0, 4))
    with pytest.raises(AdvfaceError, match=r"Received: chunks=13, n=12"):
        generate_identities(out, GENERATOR, MODEL, 12, seed=5, chunk=Chunk(0, 13))
    with pytest.raises(AdvfaceError, match=r"Received: model='no-such-model'"):
        generate_identities(tmp_path / "new", GENERATOR, "no-such-model", 12)
    assert not (tmp_path / "new").exists()
    with pytest.raises(AdvfaceError, match=r"no config.json of `semantic generate`"):
        load_identities(tmp_path / "nothing")


def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["semantic", "generate", "-n", "3", "--out", str(out), "--images", "--seed", "1"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["complete"] and summary["rows"] == [0, 3] and not summary["skipped"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    identities = load_identities(out)
    assert identities.embeddings.shape == (3, 128) and identities.seed == 1
    assert main(args) == 0  # again: nothing to do
    assert "already there, skipped" in capsys.readouterr().out

    assert main(["semantic", "generate", "-n", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Received: n=4 (run has 3)" in err
    assert (
        main(["semantic", "generate", "-n", "4", "--chunks", "2", "--chunk", "2", "--out", str(tmp_path)])
        == 2
    )
    assert "Received: chunk=2, chunks=2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["semantic", "generate", "--help"])
    assert "advface semantic generate -n 200" in capsys.readouterr().out
