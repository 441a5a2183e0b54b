"""Shared fixtures: the sample faces, one dlib aligner, a folder for artefacts a person may inspect, a
private saved-models folder and private launcher settings."""

import os
from pathlib import Path

import pytest

# Before any test imports TensorFlow: keep its C++ start-up chatter out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# GUI tests run without a display (pytest-qt's QApplication uses this platform).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

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
def settings(tmp_path):
    """The launcher's QSettings in a private ini file, so GUI tests never touch the user's settings."""
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture()
def models(tmp_path, monkeypatch) -> Path:
    """A private saved-models folder (``ADVFACE_MODELS``), so tests never write into the checkout's."""
    folder = tmp_path / "saved-models"
    monkeypatch.setenv("ADVFACE_MODELS", str(folder))
    return folder


def _tiny_face_model(kind: str, chips):
    """A small random Keras net on 96x96 OpenFace chips wrapped as a zoo FaceModel: 16-d embeddings
    (threshold at a third of the median distance between the sample faces) or 5-class logits."""
    import keras
    import numpy as np

    from advface.zoo import FaceModel, ModelSpec

    keras.utils.set_random_seed(7)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(16 if kind == "embedding" else 5)(x)
    model = keras.Model(inputs, outputs, name=f"tiny_{kind}")
    threshold = None
    if kind == "embedding":
        e = np.asarray(model(chips))
        d = np.linalg.norm(e[:, None] - e[None], axis=-1)[np.triu_indices(len(e), 1)]
        threshold = float(np.median(d) / 3)
    spec = ModelSpec(
        name=f"tiny-{kind}",
        description="a tiny random test network",
        template="openface",
        distance="euclidean" if kind == "embedding" else None,
        threshold=threshold,
        weights="random",
        licence="MIT",
        build=lambda: model,
        available=lambda: True,
        kind=kind,
    )
    return FaceModel(model, spec)


@pytest.fixture(scope="session")
def face_chips(samples, aligner):
    """Real aligned chips of the sample faces, per template: ``face_chips("dlib")`` -> ``(names, chips)``."""
    import numpy as np

    from advface.alignment import get_template
    from advface.images import load_image

    cache = {}

    def chips(template: str):
        if template not in cache:
            names, out = [], []
            for path in sorted(samples.glob("*.jpg")) + [samples / "astronaut.png"]:
                faces = aligner.align(load_image(path), get_template(template))
                if faces:
                    names.append(path.stem)
                    out.append(faces[0].chip)
            cache[template] = (names, np.stack(out))
        return cache[template]

    return chips


@pytest.fixture(scope="session")
def tiny_embedding(face_chips):
    """A tiny embedding ``FaceModel`` (96x96 OpenFace chips, 16-d, euclidean) for fast attack tests."""
    return _tiny_face_model("embedding", face_chips("openface")[1])


@pytest.fixture(scope="session")
def tiny_classifier(face_chips):
    """A tiny 5-class classifier ``FaceModel`` on 96x96 OpenFace chips."""
    return _tiny_face_model("classifier", face_chips("openface")[1])
