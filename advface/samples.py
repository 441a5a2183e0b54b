"""Fetch the sample face photos used by the demo, the tests and the benchmarks.

The photos are not committed: they are read out of two packages on PyPI, each pinned to one version and
every file checked against its sha256 (provenance and licences in ``data/README.md``):

- ``face_recognition==1.3.0`` (sdist): seven test images, photos of Barack Obama (three, two crops and an
  RGBA copy) and one of Joe Biden;
- ``scikit-image==0.26.0`` (wheel): ``astronaut.png``, NASA's public-domain portrait of Eileen Collins.

Run ``python -m advface.samples data/samples`` (what ``make samples`` does). It is idempotent: files
already present with the right hash are kept, and the marker file ``.complete`` is written last.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from advface.errors import AdvfaceError

MARKER = ".complete"

# No sample is anywhere near this; a bigger archive member is refused before it is read.
_MAX_BYTES = 16 << 20

_RETRY = "Check the network connection (pip must reach PyPI) and run `make samples` again."


@dataclass(frozen=True)
class _Source:
    """A pinned package on PyPI and the sample files inside it, each with its sha256."""

    requirement: str
    pip_args: tuple[str, ...]
    folder: str
    sha256: dict[str, str]


_SOURCES = (
    _Source(
        # The sdist: the 15 kB wheel has no test images.
        requirement="face_recognition==1.3.0",
        pip_args=("--no-binary", ":all:"),
        folder="face_recognition-1.3.0/tests/test_images/",
        sha256={
            "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
            "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
            "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
            "obama_partial_face.jpg": "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
            "obama_partial_face2.jpg": "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028",
            "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
            "32bit.png": "44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627",
        },
    ),
    _Source(
        # One fixed wheel, whatever the host: only its data file is used, never its code.
        requirement="scikit-image==0.26.0",
        pip_args=tuple(
            "--only-binary :all: --platform manylinux_2_28_x86_64 --python-version 3.11 "
            "--implementation cp --abi cp311".split()
        ),
        folder="skimage/data/",
        sha256={"astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"},
    ),
)

SAMPLE_FILES: tuple[str, ...] = tuple(name for source in _SOURCES for name in source.sha256)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_valid(path: Path, sha256: str) -> bool:
    return path.is_file() and _sha256(path.read_bytes()) == sha256


def _download(source: _Source, folder: Path) -> Path:
    """Download the package file of ``source`` into ``folder`` with pip; returns its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *source.pip_args]
    command += ["--dest", str(folder), source.requirement]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    files = sorted(folder.iterdir())
    if result.returncode != 0 or len(files) != 1:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no output"]
        raise AdvfaceError(
            f"Could not download {source.requirement} with pip (exit code {result.returncode}: "
            f"{errors[-1]}). {_RETRY}"
        )
    return files[0]


def _read_members(archive: Path, names: list[str]) -> dict[str, bytes]:
    """Read exactly ``names`` (full member names) from a .tar.gz or a wheel, nothing else."""
    data, name = {}, ""
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                for name in names:
                    info = zf.getinfo(name)
                    if info.is_dir() or info.file_size > _MAX_BYTES:
                        raise KeyError(name)
                    data[name] = zf.read(info)
        else:
            with tarfile.open(archive, "r:*") as tar:
                for name in names:
                    member = tar.getmember(name)
                    if not member.isfile() or member.size > _MAX_BYTES:
                        raise KeyError(name)
                    data[name] = tar.extractfile(member).read()
    except KeyError:
        raise AdvfaceError(
            f"{archive.name} has no regular file {name}; the package on the index is not the one "
            "advface expects. Report this, with the output of `pip download` for it."
        ) from None
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise AdvfaceError(f"Cannot read the downloaded {archive.name} ({exc}). {_RETRY}") from None
    return data


def _write(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file, so an interrupted run leaves no half file."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        raise AdvfaceError(f"Cannot write {path}: {exc.strerror}. Check the folder's permissions.") from None


def fetch_samples(dest: str | Path, *, verbose: bool = False) -> list[Path]:
    """Make sure ``dest`` holds every sample photo with its pinned sha256; download what is missing.

    Args:
        dest: the output folder (``data/samples`` for ``make samples``); created if needed.
        verbose: print one line per package downloaded.

    Returns:
        The paths of the sample files, in the order of :data:`SAMPLE_FILES`.

    Raises:
        AdvfaceError: pip failed (e.g. no network), or a downloaded file does not match its sha256.
    """
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AdvfaceError(f"Cannot create the samples folder {dest}: {exc.strerror}.") from None
    marker = dest / MARKER
    for source in _SOURCES:
        missing = [name for name, sha in source.sha256.items() if not _is_valid(dest / name, sha)]
        if not missing:
            continue
        marker.unlink(missing_ok=True)
        if verbose:
            print(f"Downloading {source.requirement} from PyPI for {', '.join(missing)} ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="advface-samples-") as tmp:
            archive = _download(source, Path(tmp))
            members = _read_members(archive, [source.folder + name for name in missing])
        for name in missing:
            data = members[source.folder + name]
            if _sha256(data) != source.sha256[name]:
                raise AdvfaceError(
                    f"sha256 mismatch for {name} from {source.requirement}: expected "
                    f"{source.sha256[name]}, got {_sha256(data)}. The file on the index has changed; "
                    "do not use it, and report this."
                )
            _write(dest / name, data)
    if not marker.is_file():
        marker.write_text("".join(f"{source.sha256[n]}  {n}\n" for source in _SOURCES for n in source.sha256))
    return [dest / name for name in SAMPLE_FILES]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m advface.samples [DEST]``; returns the exit code (2 on failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m advface.samples",
        description="Download the sample face photos (pinned PyPI packages, sha256-checked).",
        epilog="Example: python -m advface.samples data/samples",
    )
    parser.add_argument(
        "dest", nargs="?", default="data/samples", metavar="DEST", help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        paths = fetch_samples(args.dest, verbose=True)
    except AdvfaceError as exc:
        print(f"advface.samples: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} sample photos ready in {args.dest}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
