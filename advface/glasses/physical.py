"""Physical eyeglasses: find the 7 green marks on printed frames, fit where the template lies, print frames.

In the physical eyeglass attack (Sharif et al., "A General Framework for Adversarial Examples with
Objectives", 2019) the attacker wears paper eyeglass frames that carry seven green marks at the
template's :data:`~advface.glasses.geometry.MARKS`. In every photo of the attacker wearing them the marks are
found, a homography from the template's marks to the found ones is fitted, and generated glasses and the
frame mask are warped with it onto the photo, both while training and when checking success. The
:class:`~advface.glasses.geometry.Placement` returned by :func:`physical_placement` carries those
homographies to :class:`~advface.glasses.geometry.GlassesRenderer` and the eyeglass attack.

* :func:`find_marks` detects the marks in one image and orders them like :data:`MARKS`;
* :func:`fit_homography` and :func:`reprojection_error` fit and score the template-to-photo map;
* :func:`physical_placement` does both for a batch of aligned chips;
* :func:`printable_frames` writes a frame to print (PNG and PDF, A4 landscape, true to scale);
* :func:`draw_marks` paints green marks (for the printed sheet and for tests).

Example:
    >>> chips = np.stack([aligner.align_one(load_image(p), "vgg").chip for p in photos])
    >>> placement = physical_placement(chips, template="vgg", source_names=[str(p) for p in photos])
    >>> png, pdf = printable_frames(result.glasses, "runs/frames", width_mm=145)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from advface.errors import AdvfaceError
from advface.glasses.geometry import (
    CANVAS_HEIGHT,
    CANVAS_LEFT,
    CANVAS_SHAPE,
    CANVAS_TOP,
    CANVAS_WIDTH,
    MARKS,
    MASK_THICKNESS,
    Placement,
    apply_matrix,
    eyeglass_mask,
    frame_distance,
    image_matrix,
    template_matrix,
)
from advface.images import check_images

MARK_COLOUR = (0.1, 0.85, 0.2)
"""RGB of the printed marks, in [0, 1]."""
MARK_RADIUS = 2.75
"""Radius of a printed mark in template pixels (2.3 mm on a 145 mm frame); the frame rim is 7.5 wide."""
A4_LANDSCAPE_MM = (297.0, 210.0)
"""Page size of :func:`printable_frames` (width, height) in millimetres."""

_GREEN_THRESHOLD = 0.1  # G - max(R, B) of a mark pixel, at least
_GREEN_SATURATION = 0.25  # ... and at least this fraction of G (rejects pale, greyish greens)
_MAX_CANDIDATES = 40  # components considered when matching to expected positions
_MAX_GAIN = 5.0  # largest brightening of an under-exposed photo before thresholding


class MarksError(AdvfaceError):
    """The green marks of printed frames could not be found, or do not fit the printed frame."""


# ----------------------------------------------------------------------------------------------- detection


def _check_image(image, name: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise AdvfaceError(
            f"`{name}` must be one RGB image (H, W, 3). Received: {name}.shape={array.shape}."
            + (" Pass one image of the batch: images[i]." if array.ndim == 4 else "")
        )
    return check_images(array[None], name=name)[0]


def _check_points(points, name: str, count: int | None = None) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or (count is not None and len(p) != count):
        want = f"({count}, 2)" if count is not None else "(K, 2)"
        raise AdvfaceError(f"`{name}` must be {want} (x, y) points. Received: {name}.shape={p.shape}.")
    if not np.isfinite(p).all():
        raise AdvfaceError(f"`{name}` contains NaN or infinite coordinates.")
    return p


def greenness(image: np.ndarray) -> np.ndarray:
    """How green each pixel is: ``G - max(R, B)``, ``(H, W)`` float32 in ``[-1, 1]`` (marks: 0.3..0.7)."""
    image = np.asarray(image, np.float32)
    return image[..., 1] - np.maximum(image[..., 0], image[..., 2])


def _components(
    image: np.ndarray, score: np.ndarray, threshold: float, min_area: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label the green blobs; returns labels and ``(K, 6)`` rows ``(label, x, y, w, h, area)`` of the blobs
    that look like marks, largest first."""
    binary = ((score > threshold) & (score >= _GREEN_SATURATION * image[..., 1])).astype(np.uint8)
    # 1. Clean up: drop isolated pixels and 1-pixel lines (JPEG speckle), then close pin-holes.
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    stats = stats[1:]  # row k describes label k + 1
    ids = np.arange(1, count)
    area = stats[:, cv2.CC_STAT_AREA]
    w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    # 2. Keep compact blobs: a dot seen at an angle is an ellipse that fills a good part of its box.
    compact = (area >= 0.4 * w * h) & (np.maximum(w, h) <= 4 * np.minimum(w, h))
    keep = (area >= min_area) & compact
    order = np.argsort(-area[keep], kind="stable")
    return labels, np.concatenate([ids[keep][order, None], stats[keep][order]], axis=1)


def _alike_in_size(areas: np.ndarray, k: int = 7) -> slice:
    """Of blobs sorted by area (descending), the ``k`` consecutive ones closest in size (largest on ties)."""
    log = np.log(areas.astype(np.float64))
    spread = log[: len(log) - k + 1] - log[k - 1 :]
    return slice(int(np.argmin(spread + 1e-3 * np.arange(len(spread)))), None)


def _centroid(score: np.ndarray, labels: np.ndarray, label: int, box: np.ndarray) -> np.ndarray:
    """Greenness-weighted centre ``(x, y)`` of one blob, over the blob grown by 2 px (its soft edge)."""
    x, y, w, h = (int(v) for v in box[:4])
    pad = 3
    x0, y0 = max(x - pad, 0), max(y - pad, 0)
    x1, y1 = min(x + w + pad, labels.shape[1]), min(y + h + pad, labels.shape[0])
    lab = labels[y0:y1, x0:x1]
    grown = cv2.dilate((lab == label).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    weight = np.where(grown & ((lab == 0) | (lab == label)), np.clip(score[y0:y1, x0:x1], 0.0, None), 0.0)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    total = weight.sum(dtype=np.float64)
    return np.array([(weight * xs).sum() / total, (weight * ys).sum() / total])


def _agn_order(points: np.ndarray) -> np.ndarray:
    """Indices that put 7 mark centres in :data:`MARKS` order, in the frame's own axes.

    AGN's rule (the 3 topmost left to right, then the other 4 right to left) applied after rotating the
    points so that the frame's long axis (their principal direction) is horizontal: robust to tilt.
    """
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axis = vectors[:, -1] * (1.0 if vectors[0, -1] >= 0 else -1.0)  # left to right
    normal = np.array([-axis[1], axis[0]])  # downwards in image coordinates
    u, v = centred @ axis, centred @ normal
    by_height = np.argsort(v, kind="stable")
    top, bottom = by_height[:3], by_height[3:]
    return np.concatenate([top[np.argsort(u[top])], bottom[np.argsort(-u[bottom])]])


def find_marks(
    image: np.ndarray,
    *,
    expected: np.ndarray | None = None,
    source: str = "image",
    threshold: float = _GREEN_THRESHOLD,
    min_area: int = 3,
) -> np.ndarray:
    """Find the 7 green marks of printed frames in a photo and order them like :data:`MARKS`.

    A pixel is green when ``G - max(R, B) > threshold`` and that margin is at least a quarter of ``G``
    (skin, hair and grey have ``G <= R``; JPEG colour noise stays below the threshold), after an
    under-exposed photo is brightened so that its 99.5th percentile reaches 0.9 (at most 5x). The green
    pixels are cleaned with a morphological opening and closing and split into connected components;
    specks under ``min_area`` pixels and elongated or ragged blobs are dropped. Each mark's centre is the
    greenness-weighted mean over its blob and soft edge (sub-pixel).

    Ordering: with ``expected``, the 7 of the (up to 40 largest) blobs that minimise the total distance to
    the expected positions, assigned one to one (Hungarian method); this also ignores other green things.
    Without it, the 7 blobs most alike in size (largest on ties), ordered by AGN's rule (the 3 topmost left
    to right, then the other 4 right to left) in the frame's own axes, which holds for tilted heads.

    Args:
        image: one photo ``(H, W, 3)`` float32 in ``[0, 1]``, e.g. an aligned chip.
        expected: ``(7, 2)`` predicted ``(x, y)`` of the marks in :data:`MARKS` order, e.g. MARKS through
            ``template_matrix(template)`` for a chip of that template.
        source: what ``image`` is, for error messages (a file name).
        threshold: minimum ``G - max(R, B)`` of a mark pixel.
        min_area: smallest blob, in pixels, that counts as a mark.

    Returns:
        ``(7, 2)`` float32 ``(x, y)`` pixel centres, in :data:`MARKS` order.

    Raises:
        MarksError: fewer than 7 green marks were found.
    """
    image = _check_image(image, "image")
    if expected is not None:
        expected = _check_points(expected, "expected", len(MARKS))
    if not 0.0 < threshold < 1.0:
        raise AdvfaceError(f"`threshold` must be in (0, 1). Received: threshold={threshold!r}.")
    # 1. Under-exposed photos are brightened first (at most 5x), so the threshold means the same in dim light.
    brightest = float(np.percentile(image.max(axis=-1), 99.5))
    image = image * np.clip(0.9 / max(brightest, 1e-6), 1.0, _MAX_GAIN)
    score = greenness(image)
    labels, blobs = _components(image, score, threshold, int(min_area))
    if len(blobs) < len(MARKS):
        raise MarksError(
            f"Expected the {len(MARKS)} green marks of the printed frames; found {len(blobs)} green marks "
            f"in {source}; need {len(MARKS)}. Check the lighting (no strong colour cast or glare on the "
            "marks), that all 7 marks are visible (not covered by hair or hands, not out of the picture) "
            "and that the frames were printed with the marks (printable_frames(..., marks=True))."
        )
    # 2. Choose 7 blobs and order them like MARKS.
    if expected is None:
        blobs = blobs[_alike_in_size(blobs[:, 1 + cv2.CC_STAT_AREA])][: len(MARKS)]
        centres = np.array([_centroid(score, labels, b[0], b[1:]) for b in blobs])
        centres = centres[_agn_order(centres)]
    else:
        centres = np.array([_centroid(score, labels, b[0], b[1:]) for b in blobs[:_MAX_CANDIDATES]])
        cost = np.linalg.norm(centres[:, None, :] - expected[None, :, :], axis=-1)  # (candidates, 7)
        rows, cols = linear_sum_assignment(cost)
        centres = centres[rows[np.argsort(cols)]]
    return centres.astype(np.float32)


# ---------------------------------------------------------------------------------------------- homography


def _normaliser(points: np.ndarray) -> np.ndarray | None:
    """Hartley's similarity: centroid to the origin, mean distance sqrt(2); None for coinciding points."""
    centre = points.mean(axis=0)
    spread = np.linalg.norm(points - centre, axis=1).mean()
    if spread < 1e-9:
        return None
    s = np.sqrt(2.0) / spread
    return np.array([[s, 0.0, -s * centre[0]], [0.0, s, -s * centre[1]], [0.0, 0.0, 1.0]])


def _collinear(points: np.ndarray) -> bool:
    centred = points - points.mean(axis=0)
    low, high = np.linalg.eigvalsh(centred.T @ centred)
    return low <= 1e-6 * max(high, 1e-12)


def reprojection_error(matrix: np.ndarray, reference: np.ndarray, detected: np.ndarray) -> float:
    """RMS distance in pixels between ``reference`` points mapped through ``matrix`` and ``detected``.

    Args:
        matrix: ``(3, 3)`` homography from reference to detected coordinates.
        reference: ``(K, 2)`` points ``(x, y)``.
        detected: ``(K, 2)`` points ``(x, y)``.
    """
    h = np.asarray(matrix, np.float64)
    ref = _check_points(reference, "reference")
    det = _check_points(detected, "detected", len(ref))
    q = np.concatenate([ref, np.ones((len(ref), 1))], axis=1) @ h.T
    with np.errstate(divide="ignore", invalid="ignore"):
        mapped = q[:, :2] / q[:, 2:3]
    error = np.sqrt(np.mean(np.sum((mapped - det) ** 2, axis=1)))
    return float(error) if np.isfinite(error) else float("inf")


def fit_homography(
    reference: np.ndarray,
    detected: np.ndarray,
    *,
    tolerance: float | None = 3.0,
    source: str = "the image",
) -> np.ndarray:
    """Least-squares homography from ``reference`` to ``detected`` points (normalised DLT, all points).

    Both point sets are normalised (Hartley), the 2K x 9 DLT system is solved by SVD, and the result is
    denormalised and scaled so that ``H[2, 2] = 1``.

    Args:
        reference: ``(K, 2)`` points ``(x, y)``, K >= 4, e.g. :data:`MARKS` in template pixels.
        detected: ``(K, 2)`` corresponding points, e.g. :func:`find_marks` of a photo.
        tolerance: largest RMS reprojection error in pixels that is accepted (None: no check).
        source: what ``detected`` came from, for error messages.

    Returns:
        ``(3, 3)`` float64 matrix mapping reference ``(x, y, 1)`` to detected pixels.

    Raises:
        MarksError: the points are degenerate (coinciding or collinear; the map would fold the frame
            over the horizon) or the fit leaves an RMS error above ``tolerance``: the marks do not look
            like the printed frame.
    """
    ref = _check_points(reference, "reference")
    det = _check_points(detected, "detected", len(ref))
    if len(ref) < 4:
        raise AdvfaceError(f"A homography needs at least 4 point pairs. Received: {len(ref)} pairs.")
    if tolerance is not None and not tolerance > 0:
        raise AdvfaceError(
            f"`tolerance` must be positive (pixels) or None. Received: tolerance={tolerance!r}."
        )
    degenerate = MarksError(
        f"The marks found in {source} do not look like the printed frame: they (nearly) coincide or lie "
        "on one line, so no homography maps the frame onto them. "
        f"Received: detected={np.round(det, 1).tolist()}. "
        "Photograph the frames from the front with all 7 marks visible."
    )
    t_ref, t_det = _normaliser(ref), _normaliser(det)
    if t_ref is None or t_det is None or _collinear(ref) or _collinear(det):
        raise degenerate
    # 1. DLT on normalised coordinates: two rows per pair, solution = right singular vector of the
    #    smallest singular value.
    a = np.concatenate([ref, np.ones((len(ref), 1))], axis=1) @ t_ref.T
    b = np.concatenate([det, np.ones((len(det), 1))], axis=1) @ t_det.T
    zero = np.zeros_like(a)
    rows = np.concatenate(
        [
            np.concatenate([-a, zero, b[:, :1] * a], axis=1),
            np.concatenate([zero, -a, b[:, 1:2] * a], axis=1),
        ]
    )
    if len(rows) < 9:
        rows = np.concatenate([rows, np.zeros((9 - len(rows), 9))])
    _, singular, vt = np.linalg.svd(rows)
    if singular[-2] <= 1e-9 * singular[0]:  # a family of solutions: the points do not pin H down
        raise degenerate
    # 2. Denormalise and scale.
    h = np.linalg.inv(t_det) @ vt[-1].reshape(3, 3) @ t_ref
    h = h / h[2, 2] if abs(h[2, 2]) > 1e-12 * np.abs(h).max() else h / np.linalg.norm(h)
    # 3. The reference points must stay on one side of the horizon (w of one sign), or the map folds them.
    w = np.concatenate([ref, np.ones((len(ref), 1))], axis=1) @ h[2]
    if not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12 or not (np.all(w > 0) or np.all(w < 0)):
        raise degenerate
    if tolerance is not None:
        rms = reprojection_error(h, ref, det)
        if rms > tolerance:
            raise MarksError(
                f"The marks found in {source} do not look like the printed frame: the best homography "
                f"leaves an RMS error of {rms:.2f} px. Received: tolerance={tolerance:g} px. Check that "
                "the 7 marks are the frame's (no other green dots near the glasses), that the paper "
                "frame is flat, and retake the photo; or raise `tolerance`."
            )
    return h


def marks_on_face(
    image: np.ndarray, face, aligner, *, search: float = 0.15, slack: float = 0.25
) -> np.ndarray | None:
    """The 7 green marks of printed frames worn on ``face`` in a full photo or camera frame, or None.

    The marks are looked for around where the digital frames would sit on this face (:data:`MARKS` through
    the face's ``vgg`` alignment), in a box ``search`` face widths larger than theirs, and each must lie
    within ``slack`` face widths of its expected place (so other green things are not taken for marks). For
    a live view; fitting a placement to marks is :func:`physical_placement`'s job.

    Args:
        image: the frame ``(H, W, 3)`` float32 in ``[0, 1]``.
        face: an :class:`advface.alignment.Face` detected in ``image`` (box and landmarks).
        aligner: the :class:`advface.alignment.FaceAligner` that found it.

    Returns:
        ``(7, 2)`` float32 ``(x, y)`` frame pixels in :data:`MARKS` order; None unless all 7 are there.
    """
    image = _check_image(image, "image")
    expected = apply_matrix(image_matrix(aligner.chip_matrix(face, "vgg")), MARKS)
    width = max(float(face.box[2] - face.box[0]), 1.0)
    h, w = image.shape[:2]
    x0, y0 = np.floor(expected.min(axis=0) - search * width).astype(int)
    x1, y1 = np.ceil(expected.max(axis=0) + search * width).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    corner = np.array([x0, y0], np.float32)
    try:
        found = find_marks(image[y0:y1, x0:x1], expected=expected - corner, source="the frame") + corner
    except MarksError:
        return None
    if np.linalg.norm(found - expected, axis=1).max() > slack * width:
        return None  # other green things, not the frames' marks
    return found.astype(np.float32)


def physical_placement(
    chips: np.ndarray,
    *,
    template: str = "vgg",
    source_names: Sequence[str] | None = None,
    tolerance: float | None = 3.0,
) -> Placement:
    """Where the printed frames sit in aligned photos of their wearer: one fitted homography per chip.

    For each chip the marks are found near their digital position (:data:`MARKS` through
    ``template_matrix(template)``) and the homography from the template's marks to them is fitted. Should
    that fail (a pose far from the template's), the marks are ordered by AGN's rule instead and refitted.

    Args:
        chips: ``(N, S, S, 3)`` float32 chips in ``[0, 1]`` of alignment ``template`` (size S).
        template: the alignment template the chips were cut with (``"vgg"``, ``"dlib"``, ...).
        source_names: ``N`` names (file names) used in error messages; default ``"chip i"``.
        tolerance: largest RMS reprojection error in chip pixels (see :func:`fit_homography`).

    Returns:
        ``Placement(matrices, (S, S), physical=True)``; ``matrices[i]`` maps template pixels to chip ``i``.

    Raises:
        MarksError: for every chip whose marks were not found or did not fit, in one message.
    """
    from advface.alignment import get_template

    tmpl = get_template(template)
    chips = check_images(chips, name="chips", size=(tmpl.size, tmpl.size))
    if source_names is None:
        source_names = [f"chip {i}" for i in range(len(chips))]
    elif isinstance(source_names, str) or len(source_names) != len(chips):
        raise AdvfaceError(
            f"`source_names` must name each of the {len(chips)} chips. Received: "
            f"source_names={source_names!r}."
        )
    if not len(chips):
        raise AdvfaceError("`chips` is empty. Pass at least one photo of the printed frames being worn.")
    to_chip = template_matrix(tmpl.name)
    expected = apply_matrix(to_chip, MARKS)
    matrices, problems = [], []
    for chip, name in zip(chips, source_names, strict=True):
        try:
            marks = find_marks(chip, expected=expected, source=str(name))
            matrices.append(fit_homography(MARKS, marks, tolerance=tolerance, source=str(name)))
        except MarksError as exc:
            try:  # far from the template pose (a head tilted by 30 degrees): order in the frame's axes
                marks = find_marks(chip, source=str(name))
                matrices.append(fit_homography(MARKS, marks, tolerance=tolerance, source=str(name)))
            except MarksError:
                problems.append(str(exc))
    if problems:
        head = f"{len(problems)} of {len(chips)} photos cannot be used: " if len(chips) > 1 else ""
        raise MarksError(head + " | ".join(problems))
    return Placement(np.stack(matrices), (tmpl.size, tmpl.size), physical=True)


def draw_marks(
    image: np.ndarray,
    points: np.ndarray,
    *,
    radius: float = 3.0,
    colour: tuple[float, float, float] = MARK_COLOUR,
) -> np.ndarray:
    """Paint anti-aliased disks (the green marks) on a copy of ``image``.

    Each pixel is covered by ``clip(radius + 0.5 - d, 0, 1)``, ``d`` the distance from its centre to the
    disk's centre, which blends ``colour`` over the image with a one-pixel soft edge.

    Args:
        image: ``(H, W, 3)`` float32 in ``[0, 1]``.
        points: ``(K, 2)`` disk centres ``(x, y)`` in pixels (sub-pixel positions are honoured).
        radius: disk radius in pixels.
        colour: RGB in ``[0, 1]``.

    Returns:
        A new ``(H, W, 3)`` float32 image.
    """
    out = _check_image(image, "image").copy()
    points = _check_points(points, "points")
    colour = np.asarray(colour, np.float32)
    if colour.shape != (3,) or not np.all((colour >= 0) & (colour <= 1)):
        raise AdvfaceError(f"`colour` must be 3 values (RGB) in [0, 1]. Received: colour={colour.tolist()}.")
    if not radius > 0:
        raise AdvfaceError(f"`radius` must be positive (pixels). Received: radius={radius!r}.")
    h, w = out.shape[:2]
    reach = radius + 1.0
    for x, y in points:
        x0, x1 = max(int(np.floor(x - reach)), 0), min(int(np.ceil(x + reach)) + 1, w)
        y0, y1 = max(int(np.floor(y - reach)), 0), min(int(np.ceil(y + reach)) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1]
        cover = np.clip(radius + 0.5 - np.hypot(xs - x, ys - y), 0.0, 1.0)[..., None].astype(np.float32)
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1.0 - cover) + colour * cover
    return out


# -------------------------------------------------------------------------------------------- printing


@functools.lru_cache(maxsize=1)
def frame_extent() -> tuple[float, float, float, float]:
    """The frame's outer edges in the template: ``(left, top, right, bottom)``, continuous coordinates.

    Pixel ``i`` covers ``[i - 0.5, i + 0.5]``; the edges are those of the outermost pixels of
    :func:`~advface.glasses.geometry.eyeglass_mask` (columns 25 and 200: 176 template pixels wide).
    """
    ys, xs = np.nonzero(eyeglass_mask())
    return (xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5)


def _font(size_px: float):
    """A scalable font: Pillow's own (10.1+), else matplotlib's DejaVu Sans."""
    from PIL import ImageFont

    size = max(int(round(size_px)), 6)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0: no sized default font
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _render_frame(
    canvas: np.ndarray,
    scale: float,
    origin: tuple[float, float],
    size: tuple[int, int],
    cut: tuple[float, float],
) -> np.ndarray:
    """The textured frame and its cut line on white, in a page region: uint8 ``(h, w, 3)``.

    A page pixel ``(px, py)`` of the region shows template point ``((px - ox) / scale, (py - oy) / scale)``.
    The frame is the set where its signed distance ``F`` (page pixels, negative inside) is negative: the
    rims (template distance field minus half the rim width, interpolated bicubically, so edges stay smooth
    at any magnification) intersected with the canvas rectangle. The texture is the canvas upsampled
    bicubically; the cut line is the band ``|F - cut[0]| <= cut[1] / 2``. Edges are anti-aliased over one
    pixel; rows are rendered in bands to bound memory.
    """
    ox, oy = origin
    w, h = size
    margin, line = cut
    distance = frame_distance()
    centre = np.array([CANVAS_LEFT + (CANVAS_WIDTH - 1) / 2, CANVAS_TOP + (CANVAS_HEIGHT - 1) / 2])
    half = np.array([CANVAS_WIDTH / 2, CANVAS_HEIGHT / 2])
    qx = (np.abs((np.arange(w) - ox) / scale - centre[0]) - half[0]) * scale  # (w,) page px
    grey = np.float32(90 / 255)
    image = np.empty((h, w, 3), np.uint8)
    band = max(1, 2**21 // max(w, 1))
    for r0 in range(0, h, band):
        r1 = min(r0 + band, h)
        # 1. Signed distance to the frame, in page pixels.
        to_band = np.array([[scale, 0.0, ox], [0.0, scale, oy - r0]])
        d = cv2.warpAffine(
            distance, to_band, (w, r1 - r0), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
        )
        rims = (d - MASK_THICKNESS / 2) * scale
        qy = (np.abs((np.arange(r0, r1) - oy) / scale - centre[1]) - half[1])[:, None] * scale
        qxx = np.broadcast_to(qx[None, :], rims.shape)
        box = np.hypot(np.maximum(qxx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qxx, qy), 0)
        signed = np.maximum(rims, box)
        # 2. Texture inside, white outside, the cut line on top.
        canvas_to_band = to_band.copy()
        canvas_to_band[:, 2] += scale * np.array([CANVAS_LEFT, CANVAS_TOP])
        texture = cv2.warpAffine(
            canvas, canvas_to_band, (w, r1 - r0), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
        )
        alpha = np.clip(0.5 - signed, 0.0, 1.0)[..., None]
        ink = np.clip(line / 2 + 0.5 - np.abs(signed - margin), 0.0, 1.0)[..., None]
        out = 1.0 - alpha + np.clip(texture, 0.0, 1.0) * alpha
        image[r0:r1] = np.round((out * (1.0 - ink) + grey * ink) * 255)
    return image


def printable_frames(
    glasses: np.ndarray,
    path_stem: str | Path,
    *,
    width_mm: float = 145.0,
    dpi: int = 300,
    marks: bool = True,
    margin_mm: float = 1.0,
) -> tuple[Path, Path]:
    """Write a generated frame as a sheet to print at 100%: ``{stem}.png`` and ``{stem}.pdf``, A4 landscape.

    Scale: ``width_mm`` is the distance between the outer edges of the frame mask's leftmost and rightmost
    pixels in the template (columns 25 and 200 of :func:`~advface.glasses.geometry.eyeglass_mask`, i.e.
    176 template pixels), so one template pixel prints as ``width_mm / 176`` mm. The sheet holds the
    texture (the canvas upsampled bicubically) inside the frame's rims, a dark grey cut line ``margin_mm``
    outside the frame (around its outline and inside each lens opening), the 7 green marks at
    :data:`MARKS` (each in a white ring, radius :data:`MARK_RADIUS` template pixels) when ``marks``, a
    50 mm scale bar with 10 mm ticks and the caption "Print at 100% (no fit-to-page). Frame width ... mm.
    Cut along the line.". The PNG carries ``dpi`` in its metadata; the PDF page is exactly A4 landscape
    (841.89 x 595.28 pt), the image embedded as a JPEG at quality 95 without chroma subsampling.

    Args:
        glasses: one canvas ``(64, 176, 3)`` float32 in ``[0, 1]`` (e.g. ``AGNResult.glasses``).
        path_stem: output path without suffix; a ``.png``/``.pdf`` suffix is dropped, folders are made.
        width_mm: printed frame width in millimetres, 80..250 (adult frames: about 130..145).
        dpi: print resolution, 72..1200; the page is ``round(297 / 25.4 * dpi)`` x
            ``round(210 / 25.4 * dpi)`` pixels.
        marks: print the 7 green marks (needed to photograph the frames for :func:`physical_placement`).
        margin_mm: distance of the cut line outside the frame, 0..5 mm.

    Returns:
        ``(png_path, pdf_path)``.
    """
    from PIL import Image, ImageDraw

    canvas = np.asarray(glasses)
    if canvas.shape != (*CANVAS_SHAPE, 3):
        raise AdvfaceError(
            f"`glasses` must be one eyeglass canvas of shape (64, 176, 3). Received: glasses.shape="
            f"{canvas.shape}." + (" Pass one frame: glasses[i]." if canvas.ndim == 4 else "")
        )
    canvas = check_images(canvas[None], name="glasses")[0]
    if not 80.0 <= float(width_mm) <= 250.0:
        raise AdvfaceError(
            "`width_mm` (printed frame width) must be between 80 and 250 mm. "
            f"Received: width_mm={width_mm!r}. Measure a pair of glasses that fits you from temple to "
            "temple (adults: about 130 to 145 mm)."
        )
    if not 72 <= float(dpi) <= 1200:
        raise AdvfaceError(
            f"`dpi` must be between 72 and 1200. Received: dpi={dpi!r}. 300 suits most printers."
        )
    if not 0.0 <= float(margin_mm) <= 5.0:
        raise AdvfaceError(f"`margin_mm` must be between 0 and 5. Received: margin_mm={margin_mm!r}.")
    stem = Path(path_stem)
    if stem.suffix.lower() in (".png", ".pdf"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)

    # 1. The page and the scale: template pixel -> page pixel is p = scale * t + offset.
    dpi = float(dpi)
    ppm = dpi / 25.4  # page pixels per millimetre
    page_w, page_h = (round(mm * ppm) for mm in A4_LANDSCAPE_MM)
    left, top, right, bottom = frame_extent()
    scale = float(width_mm) / (right - left) * ppm
    offset_x = (page_w - 1) / 2 - scale * (left + right) / 2  # centred horizontally
    frame_mm = (bottom - top) * float(width_mm) / (right - left)
    top_mm = max(15.0, (A4_LANDSCAPE_MM[1] - frame_mm - 45.0) / 2)  # frame, bar and caption centred
    offset_y = top_mm * ppm - 0.5 - scale * top
    page = np.full((page_h, page_w, 3), 255, np.uint8)

    # 2. The frame and its cut line (margin_mm outside it), rendered in the region they cover.
    pad = (margin_mm + 2.0) * ppm
    x0, y0 = int(np.floor(offset_x + scale * left - pad)), int(np.floor(offset_y + scale * top - pad))
    x1, y1 = int(np.ceil(offset_x + scale * right + pad)), int(np.ceil(offset_y + scale * bottom + pad))
    cut = (margin_mm * ppm, max(1.0, 0.2 * ppm))  # where the cut line lies and how wide it is
    origin, size = (offset_x - x0, offset_y - y0), (x1 - x0, y1 - y0)
    page[y0:y1, x0:x1] = _render_frame(canvas, scale, origin, size, cut)

    # 3. The marks: green disks in white rings, drawn on small float crops of the page.
    if marks:
        radius = MARK_RADIUS * scale
        for x, y in MARKS * scale + np.array([offset_x, offset_y]):
            r = int(np.ceil(radius * 1.3 + 3))
            cx0, cy0 = int(x) - r, int(y) - r
            crop = page[cy0 : cy0 + 2 * r + 1, cx0 : cx0 + 2 * r + 1].astype(np.float32) / 255.0
            local = np.array([[x - cx0, y - cy0]])
            crop = draw_marks(crop, local, radius=radius * 1.3, colour=(1.0, 1.0, 1.0))
            crop = draw_marks(crop, local, radius=radius)
            page[cy0 : cy0 + 2 * r + 1, cx0 : cx0 + 2 * r + 1] = np.round(crop * 255).astype(np.uint8)

    # 4. Scale bar (tick centres 10 mm apart, 50 mm end to end) and caption.
    picture = Image.fromarray(page)
    del page
    draw = ImageDraw.Draw(picture)
    ink = (40, 40, 40)
    bar_y = offset_y + scale * bottom + 22.0 * ppm
    bar_x = (page_w - 1) / 2 - 25.0 * ppm
    half = max(0.5, 0.15 * ppm)  # half the line width
    draw.rectangle([bar_x - half, bar_y - half, bar_x + 50 * ppm + half, bar_y + half], fill=ink)
    for k in range(6):
        x = bar_x + 10.0 * k * ppm
        length = (4.0 if k in (0, 5) else 2.5) * ppm
        draw.rectangle([x - half, bar_y - length, x + half, bar_y + half], fill=ink)
    small, large = _font(3.0 * ppm), _font(4.2 * ppm)
    draw.text((bar_x, bar_y + 2.0 * ppm), "0", fill=ink, font=small, anchor="mt")
    draw.text((bar_x + 50 * ppm, bar_y + 2.0 * ppm), "50 mm", fill=ink, font=small, anchor="mt")
    caption = f"Print at 100% (no fit-to-page). Frame width {float(width_mm):g} mm. Cut along the line."
    check = "The scale bar must measure 50 mm on paper; if it does not, the print was scaled."
    draw.text(((page_w - 1) / 2, bar_y + 12.0 * ppm), caption, fill=ink, font=large, anchor="mt")
    draw.text(((page_w - 1) / 2, bar_y + 19.0 * ppm), check, fill=(90, 90, 90), font=small, anchor="mt")

    # 5. Save: PNG with its dpi, PDF with a page of exactly A4 (per-axis resolution of the pixel grid).
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    picture.save(png, dpi=(dpi, dpi))
    exact = (page_w * 25.4 / A4_LANDSCAPE_MM[0], page_h * 25.4 / A4_LANDSCAPE_MM[1])
    picture.save(pdf, "PDF", dpi=exact, quality=95, subsampling=0)
    return png, pdf
