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
        install = entry.get("install") or f"pip install {entry['package']}=={entry['version']}"
        raise WeightsError(
            f"The package {entry['package']} is not installed; advface reads its model files. "
            f"Install it with `{install}` (or run `make setup`)."
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


def package_file(package: str, name: str) -> Path:
    """Path of the file ``name`` of the manifest package ``package``, size- and sha256-checked.

    Args:
        package: a key of ``dependencies/manifest.json``, e.g. ``"gan-face-generate"``.
        name: a file listed under it, e.g. ``"weights.tar"``.
    """
    entry = manifest()[package]
    if name not in entry["files"]:
        known = ", ".join(sorted(entry["files"]))
        raise WeightsError(f"Unknown {package} model file. Received: name={name!r}. Known: {known}.")
    meta = entry["files"][name]
    return _checked(_package_folder(entry) / name, meta["sha256"], meta["bytes"])


def package_file_available(package: str, name: str) -> bool:
    """Whether ``name`` of ``package`` is installed here (a cheap check: no hashing)."""
    try:
        return (_package_folder(manifest()[package]) / name).is_file()
    except WeightsError:
        return False


def dlib_model_path(name: str) -> Path:
    """Path of a dlib model file from ``face-recognition-models``, size- and sha256-checked.

    Args:
        name: a file name listed in ``dependencies/manifest.json``, e.g.
            ``"dlib_face_recognition_resnet_model_v1.dat"``.
    """
    return package_file("face-recognition-models", name)


def dlib_model_available(name: str) -> bool:
    """Whether the dlib model file ``name`` is installed here (a cheap check: no hashing)."""
    return package_file_available("face-recognition-models", name)
