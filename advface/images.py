"""Images in and out, and the one convention every model and attack in advface shares.

An image is a float32 RGB array ``(H, W, 3)`` with values in ``[0, 1]``; a batch is ``(N, H, W, 3)``.
Resizing, channel order and normalisation are layers inside the models, never the caller's job.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from advface.errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# Values a little outside [0, 1] (float round-off in a model's preprocessing) are clipped, not refused.
_RANGE_TOLERANCE = 1e-4


def _decode_16bit(data: bytes) -> np.ndarray | None:
    """16-bit colour images, which Pillow reads as 8-bit: decode them with OpenCV at full depth."""
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3:
        return None
    array = array[..., :3][..., ::-1]  # BGR(A) -> RGB
    return array.astype(np.float32) / 65535.0


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 RGB ``(H, W, 3)`` in ``[0, 1]``.

    Handles jpg, png, bmp, webp, tiff and gif (first frame); applies the EXIF orientation; converts
    grey, palette, CMYK and RGBA (alpha dropped) to RGB; keeps 16-bit precision.

    Raises:
        ImageError: the file is missing, empty, damaged or not an image. The message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"Image not found: {path}. Check the path.") from None
    except IsADirectoryError:
        raise ImageError(f"Expected an image file, got a directory: {path}.") from None
    except OSError as exc:
        raise ImageError(f"Cannot read image {path}: {exc.strerror}.") from None
    if not data:
        raise ImageError(f"Image file is empty (0 bytes): {path}. Replace it with a real image.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.load()
            orientation = img.getexif().get(0x0112, 1)
            img = ImageOps.exif_transpose(img)
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                array = np.asarray(img, dtype=np.float32) / 65535.0
            elif mode == "I":  # 16-bit PGM and older 16-bit PNG readers: values on 0..65535
                array = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
            elif mode == "F":
                array = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
            else:
                # 16-bit colour PNG/TIFF (rarely rotated by EXIF): Pillow would truncate it to 8 bits.
                deep = _decode_16bit(data) if fmt in ("PNG", "TIFF") and orientation == 1 else None
                array = deep if deep is not None else np.asarray(img.convert("RGB"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        kind = "damaged or truncated" if not isinstance(exc, UnidentifiedImageError) else "not an image"
        raise ImageError(
            f"Cannot read image {path}: the file is {kind}. Use a jpg, png, bmp or webp image."
        ) from None
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return np.ascontiguousarray(array, dtype=np.float32)


def load_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """Read several image files (sizes may differ); see :func:`load_image`."""
    return [load_image(p) for p in paths]


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"Expected a folder of images. Received: {folder} (not a folder).")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[0, 1]`` float image(s) -> uint8, rounding to nearest (what saving to a PNG does)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write one ``(H, W, 3)`` image in ``[0, 1]`` to ``path``; the suffix picks the format."""
    path = Path(path)
    image = check_images(image[None], name="image")[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path


def check_images(images, *, name: str = "images", size: tuple[int, int] | None = None) -> np.ndarray:
    """Validate a batch of images and return it as float32 ``(N, H, W, 3)`` in ``[0, 1]``.

    Args:
        images: array-like ``(N, H, W, 3)``.
        name: the argument's name, used in error messages.
        size: required ``(H, W)``, if any.

    Raises:
        ImageError: wrong rank, channels, size, dtype or value range, with how to fix it.
    """
    array = np.asarray(images)
    if array.dtype == np.uint8:
        raise ImageError(
            f"`{name}` must be float32 in [0, 1], not uint8. Received: dtype=uint8. Divide by 255."
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"`{name}` must be float32 in [0, 1]. Received: dtype={array.dtype}.")
    if array.ndim != 4 or array.shape[-1] != 3:
        hint = " Add a batch axis: images[None]." if array.ndim == 3 else ""
        raise ImageError(
            f"`{name}` must have shape (N, H, W, 3) (RGB, channels last). "
            f"Received: {name}.shape={array.shape}.{hint}"
        )
    if size is not None and tuple(array.shape[1:3]) != tuple(size):
        raise ImageError(
            f"`{name}` must be {size[0]}x{size[1]} (an aligned face chip). Received: "
            f"{name}.shape={array.shape}. Align the faces with advface.alignment first."
        )
    array = array.astype(np.float32, copy=False)
    if array.size:
        low, high = float(array.min()), float(array.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ImageError(f"`{name}` contains NaN or infinite values.")
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            hint = " Divide by 255." if high > 1.5 else ""
            raise ImageError(
                f"`{name}` must be in [0, 1]. Received: values in [{low:.4g}, {high:.4g}].{hint}"
            )
        if low < 0 or high > 1:
            array = np.clip(array, 0.0, 1.0)
    return array
