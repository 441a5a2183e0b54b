"""Generated identities and their gallery: ``advface semantic generate``, chunked and resumable.

The semantic-robustness source (certifyingFaceRecognition ``generate_data.py`` and ``main_attack.py``)
draws ``n`` latent codes, renders them, and embeds every render with the face model; the gallery is the
embeddings of all generated identities, and an identity is recognised when its nearest gallery entry is its
own. Here each identity also keeps the alignment of its clean render (see
:class:`~advface.semantic.pipeline.FacePipeline`), so attacks and certification cut every perturbed render
the same way.

A run folder holds::

    config.json                          generator, model, n, seed, box (+ versions, machine)
    identities/chunk-00000-of-00004.npz  rows, latents, alignments, embeddings of one chunk
    images/000123.png                    clean renders (with --images)

Chunks are independent (:mod:`advface.chunks`): run them in any order, on any machine, or as a SLURM
array; a chunk whose file exists is skipped, so re-running a killed job completes it.

Latents: row ``r`` is drawn from ``N(0, I)`` by ``numpy.random.default_rng((seed, r // 1000))`` (row
``r % 1000`` of that block of 1000), then mapped through the generator's mapping network if it has one.
Row ``r`` thus depends only on ``(seed, r)``: any chunking gives the same identities, and a chunk of a
million-identity run draws only its own blocks.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advface.chunks import Chunk, load_chunks, save_npz_atomic
from advface.errors import AdvfaceError
from advface.generators import LatentGenerator, get_generator_spec
from advface.progress import ProgressCallback, report
from advface.runs import write_config
from advface.semantic.pipeline import FacePipeline, resolve_box
from advface.zoo import get_spec

LATENT_BLOCK = 1000
_SUBFOLDER = "identities"


@dataclass(frozen=True)
class Identities:
    """Generated identities: latents, the alignment of their clean renders, and their embeddings.

    Attributes:
        rows: ``(N,)`` int global indices in ``0 .. n-1`` (sorted).
        latents: ``(N, latent_size)`` float32.
        alignments: ``(N, 2, 3)`` float32 image -> chip matrices of the model's template.
        embeddings: ``(N, D)`` float32: the gallery.
        generator: generator registry name.
        model: face model zoo name.
        seed: latent seed.
        folder: the run folder they were loaded from, or None.
    """

    rows: np.ndarray = field(repr=False)
    latents: np.ndarray = field(repr=False)
    alignments: np.ndarray = field(repr=False)
    embeddings: np.ndarray = field(repr=False)
    generator: str
    model: str
    seed: int
    folder: Path | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def positions(self, rows) -> np.ndarray:
        """Where the global ``rows`` sit in these arrays; an error names rows that are not here."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        order = np.argsort(self.rows, kind="stable")
        found = np.searchsorted(self.rows, rows, sorter=order)
        found = np.clip(found, 0, max(len(self.rows) - 1, 0))
        positions = order[found] if len(self.rows) else np.zeros(0, np.int64)
        missing = rows[self.rows[positions] != rows] if len(self.rows) else rows
        if len(missing):
            raise AdvfaceError(
                f"Rows not among these identities. Received: rows={missing[:10].tolist()}. They hold "
                f"{len(self.rows)} rows from {int(self.rows.min()) if len(self.rows) else 0} to "
                f"{int(self.rows.max()) if len(self.rows) else 0}."
            )
        return positions

    def subset(self, rows) -> Identities:
        """The identities of the global ``rows``, in that order."""
        at = self.positions(rows)
        return Identities(
            self.rows[at],
            self.latents[at],
            self.alignments[at],
            self.embeddings[at],
            self.generator,
            self.model,
            self.seed,
            self.folder,
        )


def identity_latents(generator: LatentGenerator, rows, seed: int, *, batch_size: int = 256) -> np.ndarray:
    """Latents ``(len(rows), latent_size)`` float32 of the global ``rows`` (row ``r`` depends on ``(seed, r)``
    only; see the module docstring)."""
    rows = np.asarray(rows, np.int64).reshape(-1)
    z = np.zeros((len(rows), generator.z_size), np.float32)
    for block in np.unique(rows // LATENT_BLOCK):
        draws = np.random.default_rng((seed, int(block))).standard_normal((LATENT_BLOCK, generator.z_size))
        here = rows // LATENT_BLOCK == block
        z[here] = draws[rows[here] % LATENT_BLOCK]
    if not generator.has_mapping:
        return z
    out = [generator.map(z[i : i + batch_size]).numpy() for i in range(0, len(z), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, generator.latent_size), np.float32)


def generate_identities(
    out,
    generator,
    model,
    n: int,
    *,
    seed: int = 0,
    chunk: Chunk | None = None,
    save_images: bool = False,
    batch_size: int = 64,
    box="auto",
    progress: ProgressCallback | None = None,
) -> Path:
    """Generate chunk ``chunk`` of ``n`` identities and their gallery embeddings into the run folder ``out``.

    1. Check the arguments against ``out/config.json`` (written by the first call; later calls, any chunk,
       must repeat ``n``, ``seed``, ``generator``, ``model`` and ``box``).
    2. Skip the chunk if ``out/identities/<chunk.name>.npz`` exists.
    3. Per batch: draw the rows' latents (:func:`identity_latents`), render them, align each clean render
       (:meth:`FacePipeline.align_images`) and embed the chips through the same differentiable warp the
       attacks use (:meth:`FacePipeline.embed_rendered`); with ``save_images`` write
       ``out/images/<row:06d>.png``.
    4. Write the chunk file atomically (rows, latents, alignments, embeddings).

    Args:
        out: run folder.
        generator: registry name or :class:`LatentGenerator`.
        model: zoo name or embedding :class:`~advface.zoo.FaceModel`.
        n: identities in the whole run (all chunks).
        seed: latent seed (non-negative).
        chunk: which share of the rows to make; default all of them (``Chunk(0, 1)``).
        save_images: also save the clean renders as PNGs.
        batch_size: identities rendered and embedded at once (and per progress step).
        box: where faces sit (see :func:`advface.semantic.pipeline.resolve_box`).
        progress: called once per batch (stage ``"identities"``).

    Returns:
        ``out`` as a Path.
    """
    # 1. Arguments, checked before any work.
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise AdvfaceError(f"The number of identities must be a positive integer. Received: n={n!r}.")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise AdvfaceError(f"`seed` must be a non-negative integer. Received: seed={seed!r}.")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise AdvfaceError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}.")
    chunk = Chunk() if chunk is None else chunk
    if chunk.count > n:
        raise AdvfaceError(
            f"More chunks than identities. Received: chunks={chunk.count}, n={n}. Use at most {n} chunks."
        )
    generator_name = generator if isinstance(generator, str) else generator.name
    model_name = model if isinstance(model, str) else model.name
    if isinstance(generator, str):  # unknown names fail here, before any folder is made
        get_generator_spec(generator)
    if isinstance(model, str):
        get_spec(model)
    resolved = resolve_box(generator_name, box)
    out = Path(out)
    arguments = {
        "generator": generator_name,
        "model": model_name,
        "n": int(n),
        "seed": int(seed),
        "box": list(resolved) if resolved else "detect",
        "latent_block": LATENT_BLOCK,
    }
    _start(out, arguments)
    folder = out / _SUBFOLDER
    _check_split(folder, chunk)
    path = folder / f"{chunk.name}.npz"
    rows = np.arange(chunk.rows(n).start, chunk.rows(n).stop, dtype=np.int64)
    batches = range(0, len(rows), batch_size)
    if path.is_file():
        report(progress, len(batches), len(batches), "identities", skipped=len(rows))
        return out

    # 2. The pipeline (loads the generator and the model).
    pipeline = _pipeline(generator, model, resolved)
    latents = identity_latents(pipeline.generator, rows, seed)
    alignments = np.zeros((len(rows), 2, 3), np.float32)
    embeddings = np.zeros((len(rows), pipeline.embedding_size), np.float32)
    t0 = time.perf_counter()

    # 3. Render, align and embed, batch by batch.
    for step, start in enumerate(batches, 1):
        part = slice(start, start + batch_size)
        images = pipeline.generator.images(latents[part], batch_size=batch_size)
        alignments[part] = pipeline.align_images(images)
        embeddings[part] = pipeline.embed_rendered(images, alignments[part], batch_size=batch_size)
        if save_images:
            from advface.images import save_image

            for row, image in zip(rows[part], images, strict=True):
                save_image(out / "images" / f"{row:06d}.png", image)
        done = min(start + batch_size, len(rows))
        report(progress, step, len(batches), "identities", per_second=done / (time.perf_counter() - t0))

    # 4. One file per chunk, complete or absent.
    save_npz_atomic(path, rows=rows, latents=latents, alignments=alignments, embeddings=embeddings)
    return out


_PIPELINES: dict = {}


def _pipeline(generator, model, box) -> FacePipeline:
    """A :class:`FacePipeline`, kept for the next chunk of the same generator and model in this process (its
    compiled graphs are traced once); rebuilt when the zoo hands out another model (new weights)."""
    if not (isinstance(generator, str) and isinstance(model, str)):
        return FacePipeline(generator, model, box=box if box else "detect")
    from advface.zoo import load_model

    face_model = load_model(model)
    key = (generator, model, box)
    cached = _PIPELINES.get(key)
    if cached is None or cached.model.keras_model is not face_model.keras_model:
        _PIPELINES.clear()
        cached = _PIPELINES[key] = FacePipeline(generator, face_model, box=box if box else "detect")
    return cached


def load_identities(folder, *, complete: bool = True) -> Identities:
    """The identities of a run folder made by :func:`generate_identities`, all chunks present merged.

    Args:
        folder: the run folder (with ``config.json`` and ``identities/``).
        complete: require every chunk (an error names the missing ones); False: use those present.
    """
    folder = Path(folder)
    arguments = _read_config(folder)
    if arguments is None:
        raise AdvfaceError(
            f"{folder} is not a folder of generated identities (no config.json of `semantic generate`). "
            f"Received: folder={str(folder)!r}. Make one with `advface semantic generate -n N --out "
            f"{folder}`."
        )
    n = int(arguments["n"])
    chunks = load_chunks(folder / _SUBFOLDER)
    count = _split(folder / _SUBFOLDER)
    if not chunks:
        raise AdvfaceError(
            f"{folder} holds no identities yet. Received: no chunk files in {folder / _SUBFOLDER}. Run "
            f"{_command(arguments, folder)}."
        )
    rows = np.concatenate([c["rows"] for c in chunks]).astype(np.int64)
    if complete and len(rows) != n:
        present = {int(p.stem.split("-")[1]) for p in (folder / _SUBFOLDER).glob("chunk-*.npz")}
        missing = [Chunk(i, count).name for i in range(count) if i not in present]
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise AdvfaceError(
            f"{folder} is missing {len(missing)} of {count} chunks: {shown}. Received: {len(rows)} of {n} "
            f"identities. Run {_command(arguments, folder)} --chunks {count} --chunk I for each missing I, "
            "or load with complete=False."
        )
    order = np.argsort(rows, kind="stable")

    def merged(key: str) -> np.ndarray:
        return np.concatenate([c[key] for c in chunks])[order]

    return Identities(
        rows[order],
        merged("latents").astype(np.float32),
        merged("alignments").astype(np.float32),
        merged("embeddings").astype(np.float32),
        str(arguments["generator"]),
        str(arguments["model"]),
        int(arguments["seed"]),
        folder,
    )


def _command(arguments: dict, folder: Path) -> str:
    box = arguments.get("box")
    box_flag = "" if box in (None, "detect") else f" --box {','.join(str(v) for v in box)}"
    return (
        f"`advface semantic generate -n {arguments['n']} --generator {arguments['generator']} --model "
        f"{arguments['model']} --seed {arguments['seed']}{box_flag} --out {folder}`"
    )


def _read_config(folder: Path) -> dict | None:
    path = folder / "config.json"
    for attempt in range(20):  # another job may be writing it right now
        if not path.is_file():
            return None
        try:
            config = json.loads(path.read_text())
            break
        except json.JSONDecodeError:
            if attempt == 19:
                raise AdvfaceError(
                    f"{path} is not valid JSON. Received: a damaged config.json. Delete the run folder "
                    "and start again."
                ) from None
            time.sleep(0.1)
    if config.get("command") != "semantic generate":
        return None
    return config.get("arguments", {})


def _start(out: Path, arguments: dict) -> None:
    """Write ``config.json`` once (the first of many parallel chunk jobs wins); later calls must match."""
    previous = _read_config(out)
    if previous is None and (out / "config.json").is_file():
        raise AdvfaceError(
            f"{out} holds another kind of run. Received: out={str(out)!r}. Use a new --out folder."
        )
    if previous is None:
        staging = out / f".config-{os.getpid()}-{secrets.token_hex(4)}"
        write_config(staging, "semantic generate", arguments, seed=arguments["seed"])
        try:
            os.link(staging / "config.json", out / "config.json")  # fails if another job got there first
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not (out / "config.json").exists():
                os.replace(staging / "config.json", out / "config.json")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        previous = _read_config(out)
    wanted = json.loads(json.dumps(arguments))
    if {k: previous.get(k) for k in wanted} != wanted:
        differ = {k: (previous.get(k), v) for k, v in wanted.items() if previous.get(k) != v}
        shown = ", ".join(f"{k}={new!r} (run has {old!r})" for k, (old, new) in differ.items())
        raise AdvfaceError(
            f"{out} holds identities made with other arguments. Received: {shown}. Repeat the run's "
            "arguments to add chunks to it, or use a new --out folder."
        )


def _split(folder: Path) -> int:
    """The chunk count of the files in ``folder`` (0 when there are none)."""
    counts = {int(p.stem.split("-of-")[1]) for p in folder.glob("chunk-*-of-*.npz")}
    return max(counts) if counts else 0


def _check_split(folder: Path, chunk: Chunk) -> None:
    count = _split(folder)
    if count and count != chunk.count:
        raise AdvfaceError(
            f"{folder} holds chunks of a {count}-way split. Received: chunks={chunk.count}. Use --chunks "
            f"{count} in this folder, or a new --out folder."
        )
