"""Cluster chunking: split a long job into ``count`` independent pieces that can run anywhere, in any order.

A job of ``n`` items is cut into ``count`` contiguous chunks (sizes differ by at most one, as
``np.array_split``). Chunk ``index`` writes one file named after it (``chunk-00003-of-00010.npz``) with
:func:`save_npz_atomic`, so a file under its final name is always complete: a job killed half way leaves at
most a hidden temporary file, and re-running it redoes only the chunks whose files are missing.
:func:`load_chunks` gathers whatever chunks are present.

On SLURM, ``sbatch --array=0-9`` with ``--chunks 10`` runs the ten chunks as one array; ``--chunk`` and
``--chunks`` default to ``$SLURM_ARRAY_TASK_ID`` and ``$SLURM_ARRAY_TASK_COUNT``.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError

_NAME = re.compile(r"chunk-(\d+)-of-(\d+)")


@dataclass(frozen=True)
class Chunk:
    """Chunk ``index`` (0-based) of ``count``.

    Attributes:
        index: which chunk, ``0 <= index < count``.
        count: how many chunks the job is cut into.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not isinstance(self.count, int | np.integer) or isinstance(self.count, bool) or self.count < 1:
            raise AdvfaceError(
                f"The number of chunks must be a positive integer. Received: chunks={self.count!r}."
            )
        if not isinstance(self.index, int | np.integer) or isinstance(self.index, bool):
            raise AdvfaceError(f"The chunk index must be an integer. Received: chunk={self.index!r}.")
        if not 0 <= self.index < self.count:
            raise AdvfaceError(
                f"The chunk index must be in 0..{self.count - 1} (0-based). Received: chunk={self.index}, "
                f"chunks={self.count}. On SLURM use --array=0-{self.count - 1}, or pass --chunk and --chunks."
            )
        object.__setattr__(self, "index", int(self.index))
        object.__setattr__(self, "count", int(self.count))

    def rows(self, n: int) -> range:
        """This chunk's contiguous share of ``range(n)`` (the first ``n % count`` chunks get one more)."""
        if not isinstance(n, int | np.integer) or n < 0:
            raise AdvfaceError(f"The number of rows must be a non-negative integer. Received: n={n!r}.")
        size, extra = divmod(int(n), self.count)
        start = self.index * size + min(self.index, extra)
        return range(start, start + size + (self.index < extra))

    @property
    def name(self) -> str:
        """``chunk-00003-of-00010``: the stem of this chunk's files."""
        return f"chunk-{self.index:05d}-of-{self.count:05d}"


def _env_int(variable: str) -> int | None:
    text = os.environ.get(variable)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise AdvfaceError(
            f"${variable} must be an integer. Received: {variable}={text!r}. Pass --chunk and --chunks."
        ) from None


def chunk_from_args(chunks: int | None, chunk: int | None) -> Chunk:
    """The :class:`Chunk` a job should run, from its arguments or from SLURM's array variables.

    Args:
        chunks: number of chunks; None: ``$SLURM_ARRAY_TASK_COUNT`` if set, else 1.
        chunk: 0-based chunk index; None: ``$SLURM_ARRAY_TASK_ID`` if set, else 0. SLURM's task id is used as
            it is, so an array must count from 0 (``--array=0-9``; ``--array=3,7`` re-runs chunks 3 and 7
            when ``--chunks`` is given).
    """
    if chunks is None:
        chunks = _env_int("SLURM_ARRAY_TASK_COUNT")
        chunks = 1 if chunks is None else chunks
    if chunk is None:
        chunk = _env_int("SLURM_ARRAY_TASK_ID")
        chunk = 0 if chunk is None else chunk
    return Chunk(index=chunk, count=chunks)


def save_npz_atomic(path, **arrays) -> Path:
    """Write ``arrays`` to the ``.npz`` file ``path`` so that ``path`` is either absent or complete.

    The arrays go to a hidden temporary file in the same folder, which is flushed to disk and then renamed
    over ``path`` (``os.replace`` is atomic on one file system). An error removes the temporary file; a
    killed process may leave one (``.NAME.tmp-*``), which :func:`load_chunks` ignores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (best effort: not every file system allows it)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def load_chunks(folder, pattern: str = "chunk-*.npz") -> list[dict]:
    """The arrays of every complete chunk file in ``folder``, sorted by chunk index.

    Each dict holds one file's arrays, as saved. Chunk index and count come from the file name
    (``...chunk-00003-of-00010...``); hidden temporary files of unfinished writes are ignored.

    Raises:
        AdvfaceError: a file is unreadable or not named after a chunk, files come from different splits (not
            the same count), two files are the same chunk, or two files' ``rows`` arrays overlap.
    """
    folder = Path(folder)
    found = []
    for path in folder.glob(pattern):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = _NAME.search(path.stem)
        if match is None:
            raise AdvfaceError(
                f"{path} matches {pattern!r} but its name does not say which chunk it is. Received: "
                f"file={path.name!r}. Expected a name with chunk-XXXXX-of-YYYYY; move the file away."
            )
        found.append((int(match.group(1)), int(match.group(2)), path))
    found.sort()
    counts = sorted({count for _, count, _ in found})
    if len(counts) > 1:
        raise AdvfaceError(
            f"{folder} holds chunks of different splits. Received: chunk counts {counts}. Keep the files of "
            "one split (one --chunks value) per folder."
        )
    out, seen, owners = [], set(), []
    for index, _, path in found:
        if index in seen:
            raise AdvfaceError(
                f"{folder} holds chunk {index} twice. Received: {path.name}. Keep one of them."
            )
        seen.add(index)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise AdvfaceError(
                f"Cannot read the chunk file {path} ({type(exc).__name__}: {exc}). Delete it and re-run its "
                "chunk."
            ) from None
        if "rows" in arrays:
            owners.append((np.asarray(arrays["rows"], np.int64).reshape(-1), path.name))
        out.append(arrays)
    _check_disjoint(owners, folder)
    return out


def _check_disjoint(owners: list, folder: Path) -> None:
    if not owners:
        return
    rows = np.concatenate([r for r, _ in owners])
    values, counts = np.unique(rows, return_counts=True)
    if np.all(counts == 1):
        return
    row = int(values[np.argmax(counts > 1)])
    names = [name for r, name in owners if np.any(r == row)]
    raise AdvfaceError(
        f"Chunk files overlap: row {row} is in {' and '.join(names)}. Received: overlapping rows in "
        f"{folder}. Keep the files of one split per folder."
    )


def local_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA device ids (``$CUDA_VISIBLE_DEVICES`` when set)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    import tensorflow as tf

    return [str(i) for i in range(len(tf.config.list_physical_devices("GPU")))]


def fan_out(argv: list[str], workers: int, chunk: Chunk) -> int:
    """Run ``advface ARGV`` as ``workers`` processes on this machine, one per local GPU, and wait for them.

    This job's chunk ``i`` of ``n`` becomes chunks ``i * workers + g`` of ``n * workers`` (g = 0 ..
    workers - 1), so every job of an array must use the same ``workers``; each process sees one GPU
    (``CUDA_VISIBLE_DEVICES``), or shares the CPU when there is none. Returns the worst exit code.
    """
    import subprocess
    import sys

    gpus = local_gpus()
    total = chunk.count * workers
    strip = {"--workers", "--chunks", "--chunk"}
    base, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in strip:
            skip = "=" not in token
            continue
        base.append(token)
    jobs = []
    for g in range(workers):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[g % len(gpus)]
        # The last value of a flag wins: a child is one worker on its own chunk, whatever abbreviation of
        # --workers (argparse takes --work) the user typed; without it every child would fan out again.
        command = [sys.executable, "-m", "advface.cli", *base, "--workers", "1", "--chunks", str(total)]
        jobs.append(subprocess.Popen([*command, "--chunk", str(chunk.index * workers + g)], env=env))
    return max(job.wait() for job in jobs)
