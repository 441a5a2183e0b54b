"""Shared fixtures: the sample faces, one dlib aligner, a folder for artefacts a person may inspect, and a
private saved-models folder."""

import os
from pathlib import Path

import pytest

# Before any test imports TensorFlow: keep its C++ start-up chatter out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def samples() -> Path:
    """``data/samples``, made by ``make samples`` (which ``make test`` runs first)."""
    folder = ROOT / "data" / "samples"
    if not (folder / ".complete").is_file():
        pytest.fail("sample faces missing: run `make samples`")
    return folder


@pytest.fixture(scope="session")
def aligner():
    """One HOG + 5-point :class:`advface.alignment.FaceAligner` for the whole session."""
    from advface.alignment import FaceAligner

    return FaceAligner()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``test-artifacts/`` under the repository root (git-ignored), created."""
    folder = ROOT / "test-artifacts"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture()
def models(tmp_path, monkeypatch) -> Path:
    """A private saved-models folder (``ADVFACE_MODELS``), so tests never write into the checkout's."""
    folder = tmp_path / "saved-models"
    monkeypatch.setenv("ADVFACE_MODELS", str(folder))
    return folder
