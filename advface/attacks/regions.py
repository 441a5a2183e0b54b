"""Named pixel masks for region attacks: where on an aligned chip a physical attacker can change pixels.

Regions are drawn once in the 224x224 VGG template (dlib's chip, padding 0.25, the eyeglass template of
:mod:`advface.glasses.geometry`) and mapped to any other template's chip with the same template maps
the eyeglass attack uses, so "eyeglasses" covers the same frame on a dlib 150, OpenFace 96 or ArcFace 112
chip.

==============  ==========================================================================================
region          what it covers
==============  ==========================================================================================
``eyeglasses``  the AGN eyeglass frame (about 6% of the chip)
``forehead``    a band across the forehead above the eyebrows
``sticker``     a small square patch at the centre of the forehead (an AdvHat-style sticker)
==============  ==========================================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError

REGIONS = ("eyeglasses", "forehead", "sticker")


def _template_region(name: str) -> np.ndarray:
    from advface.glasses.geometry import TEMPLATE_SIZE, eyeglass_mask

    if name == "eyeglasses":
        return eyeglass_mask()
    mask = np.zeros((TEMPLATE_SIZE, TEMPLATE_SIZE), np.float32)
    if name == "forehead":
        mask[14:52, 56:168] = 1.0
    elif name == "sticker":
        mask[18:48, 97:127] = 1.0
    else:
        raise AdvfaceError(f"Unknown region. Received: region={name!r}. Known: {', '.join(REGIONS)}.")
    return mask


def region_mask(name: str, template: str) -> np.ndarray:
    """The region ``name`` on a chip of alignment ``template``: ``(S, S)`` float32 of 0 and 1."""
    import cv2

    from advface.alignment import get_template
    from advface.glasses.geometry import template_matrix

    size = get_template(template).size
    warped = cv2.warpPerspective(
        _template_region(name), template_matrix(template), (size, size), flags=cv2.INTER_LINEAR
    )
    return (warped > 0.5).astype(np.float32)


def load_mask(spec: str | Path, template: str) -> np.ndarray:
    """A mask from a region name (:data:`REGIONS`) or an image file (white = may change), resized to the
    template's chip size: ``(S, S)`` float32 in ``[0, 1]``."""
    import cv2

    from advface.alignment import get_template
    from advface.images import load_image

    if str(spec) in REGIONS:
        return region_mask(str(spec), template)
    path = Path(spec)
    if not path.is_file():
        raise AdvfaceError(
            f"--mask is a region ({', '.join(REGIONS)}) or an image file (white = may change). "
            f"Received: {spec}."
        )
    size = get_template(template).size
    grey = load_image(path).mean(axis=-1)
    mask = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    if not (mask > 0).any():
        raise AdvfaceError(f"The mask {path} is black everywhere: white marks the pixels that may change.")
    return np.clip(mask, 0.0, 1.0)
