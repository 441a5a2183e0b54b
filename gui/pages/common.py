"""Small pieces every launcher page uses: the image filter of open dialogs, numpy images as pixmaps, the
in-page message line and the embedding-model loader."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel

from advface.errors import AdvfaceError
from advface.images import to_uint8

DEFAULT_MODEL = "dlib-resnet"
IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff *.gif);;All files (*)"


def pixmap(image: np.ndarray) -> QPixmap:
    """A float ``(H, W, 3)`` image in ``[0, 1]`` as a QPixmap (8-bit, a copy that owns its pixels)."""
    pixels = np.ascontiguousarray(to_uint8(image))
    h, w = pixels.shape[:2]
    return QPixmap.fromImage(QImage(pixels.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy())


def message_label() -> QLabel:
    """The red, selectable line where a page shows what went wrong."""
    label = QLabel("")
    label.setWordWrap(True)
    label.setStyleSheet("color: #b00020;")
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def embedding_model(name: str):
    """The zoo model ``name`` (cached per process), which must output embeddings."""
    from advface.zoo import load_model

    model = load_model(name)
    if model.kind != "embedding":
        raise AdvfaceError(
            f"This page compares embeddings, and {model.name} is a {model.kind}. Received: "
            f"model={name!r}. Choose an embedding model."
        )
    return model


def model_choices() -> list[str]:
    """Names of the embedding models available here (the default when the zoo cannot be listed)."""
    from advface.zoo import list_models

    try:
        rows = list_models()
    except AdvfaceError:
        return [DEFAULT_MODEL]
    names = [r["name"] for r in rows if r["available"] and r["kind"] == "embedding"]
    return names or [DEFAULT_MODEL]
