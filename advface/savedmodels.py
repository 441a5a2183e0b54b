"""The ``saved-models/`` folder: weights advface converts or trains, and their register ``MODELS.md``.

Each weights file is ``<name>.weights.h5`` (Keras 3). ``MODELS.md`` keeps one row per file with its origin,
the command that reproduces it and its sha256, and :func:`weights_path` checks that hash before a model
loads the file, so a truncated or swapped file is caught with a message instead of odd results.

Beside a weights file, ``<name>.json`` keeps what the file alone does not say: class labels, the source
file's hash, and for trained models how to rebuild them.

The folder is ``$ADVFACE_MODELS`` when set, else ``saved-models/`` of the source checkout (``pip install
-e``), else ``~/.local/share/advface/saved-models``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from advface.errors import WeightsError

_HEADER = """# saved-models/: weights advface trains or converts

Each entry: the file, where it came from, the command that reproduces it, and its sha256.

| file | origin | command | sha256 |
|---|---|---|---|
"""
_ROW = re.compile(
    r"^\| `?(?P<file>[^|`]+?)`? \| (?P<origin>[^|]*) \| (?P<command>[^|]*) \| `?(?P<sha>[0-9a-f]{64})`? \|$"
)


def models_dir() -> Path:
    """The saved-models folder (see the module docstring); not created here."""
    if os.environ.get("ADVFACE_MODELS"):
        return Path(os.environ["ADVFACE_MODELS"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent / "saved-models"
    if checkout.is_dir():
        return checkout
    return Path.home() / ".local" / "share" / "advface" / "saved-models"


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register() -> dict[str, dict[str, str]]:
    """The rows of ``MODELS.md``: ``{file: {"origin", "command", "sha256"}}``."""
    index = models_dir() / "MODELS.md"
    rows = {}
    if index.is_file():
        for line in index.read_text(encoding="utf-8").splitlines():
            match = _ROW.match(line.strip())
            if match:
                rows[match["file"].strip()] = {
                    "origin": match["origin"].strip(),
                    "command": match["command"].strip().strip("`"),
                    "sha256": match["sha"],
                }
    return rows


def record(path, *, origin: str, command: str) -> str:
    """Add or replace the ``MODELS.md`` row of ``path`` (a file in :func:`models_dir`); returns its sha256."""
    path = Path(path)
    digest = sha256(path)
    index = models_dir() / "MODELS.md"
    text = index.read_text(encoding="utf-8") if index.is_file() else _HEADER
    clean = lambda s: s.replace("|", "/").replace("\n", " ").strip()  # noqa: E731
    row = f"| `{path.name}` | {clean(origin)} | `{clean(command)}` | `{digest}` |"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _ROW.match(line.strip())
        if match and match["file"].strip() == path.name:
            lines[i] = row
            break
    else:
        # Insert after the last table row (or the header separator).
        last = max(i for i, line in enumerate(lines) if line.startswith("|"))
        lines.insert(last + 1, row)
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, index)
    return digest


def weights_file(name: str) -> Path:
    """Where the weights of zoo model ``name`` live (whether or not the file exists)."""
    return models_dir() / f"{name}.weights.h5"


def weights_path(name: str, *, hint: str | None = None) -> Path:
    """The checked weights file of zoo model ``name``.

    Raises:
        WeightsError: the file is missing (the message names ``hint``, the command that makes it), or its
            sha256 differs from the one ``MODELS.md`` recorded.
    """
    path = weights_file(name)
    if not path.is_file():
        how = hint or f"advface zoo convert {name} FILE"
        raise WeightsError(f"No weights for {name}: {path} does not exist. Make them with `{how}`.")
    expected = register().get(path.name, {}).get("sha256")
    if expected and sha256(path) != expected:
        how = register()[path.name]["command"] or f"advface zoo convert {name} FILE"
        raise WeightsError(
            f"{path} does not match the sha256 recorded in {path.parent / 'MODELS.md'} (corrupt or "
            f"replaced). Re-create it with `{how}`."
        )
    return path


def resolve_weights(weights) -> Path | None:
    """A builder's ``weights=`` argument: None, a path to a ``.weights.h5`` file, or a zoo name."""
    if weights is None:
        return None
    path = Path(weights)
    if path.suffix == ".h5" or path.is_file():
        if not path.is_file():
            raise WeightsError(f"Weights file not found. Received: weights={str(weights)!r}.")
        return path
    return weights_path(str(weights))


def read_metadata(name: str) -> dict | None:
    """``<name>.json`` in the saved-models folder (labels, source, training details), or None."""
    path = models_dir() / f"{name}.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not valid JSON ({exc}). Delete it or re-create the model.") from None
    return meta if isinstance(meta, dict) else None


def write_metadata(name: str, meta: dict) -> Path:
    """Write ``<name>.json`` atomically."""
    path = models_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def store(model, name: str, *, origin: str, command: str, meta: dict) -> tuple[Path, str]:
    """Save ``model``'s weights as ``<name>.weights.h5`` (atomically, without any optimizer state), write
    ``<name>.json`` and record the ``MODELS.md`` row. Returns the file and its sha256."""
    import keras

    target = weights_file(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.partial.weights.h5")
    # A fresh functional view of the same layers: the same weight layout, without a compiled optimizer.
    keras.Model(model.inputs, model.outputs).save_weights(tmp)
    os.replace(tmp, target)
    write_metadata(name, meta)
    return target, record(target, origin=origin, command=command)
