"""Where eyeglasses sit on a face: the frame mask, the generator's canvas and the 7 marks.

Everything is defined once, in the **eyeglass template**: the 224x224 VGG-pose face chip of the AGN attack
(alignment template ``vgg``: dlib's 5/68-point fit, padding 0.25). In it

* the generator paints a 64x176 **canvas** at rows 53..116, cols 25..200 (Sharif et al., AGN);
* the **frame mask** (:func:`eyeglass_mask`) marks the pixels a frame covers: two wayfarer-style rims,
  a bridge and short temple stubs, about 6% of the chip, drawn from a short list of control points;
* seven **marks** (:data:`MARKS`) sit on the frame, where printed frames carry green dots for the
  physical attack (AGN's reference positions).

A *placement* is a 3x3 matrix that maps template pixel ``(x, y, 1)`` to pixel coordinates of another
image: :func:`template_matrix` for any alignment template's chip (the dlib 150 chip, the OpenFace 96 chip,
...), :func:`image_matrix` for a detected face in a camera frame, and a fitted homography for a photo of
printed frames (``advface.glasses.physical``). :class:`GlassesRenderer` warps canvases through such
placements onto face images, differentiably, which is how the attack and its success check put glasses on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from advface.errors import AdvfaceError

TEMPLATE_SIZE = 224
"""Side of the eyeglass template (the AGN VGG chip), in pixels."""
CANVAS_TOP, CANVAS_LEFT = 53, 25
CANVAS_HEIGHT, CANVAS_WIDTH = 64, 176
CANVAS_SHAPE = (CANVAS_HEIGHT, CANVAS_WIDTH)

MARKS = np.array(
    [(34, 69), (114, 67), (190, 67), (175, 103), (134, 100), (97, 98), (52, 105)], dtype=np.float32
)
"""The 7 mark centres ``(x, y)`` in the template: top-left, bridge, top-right, then along the bottom of the
right lens and the left lens (AGN's order, as the physical attack detects them)."""

# Centre lines of the frame's parts (template pixels, (x, y)); the rim is a band of MASK_THICKNESS around
# them. The lenses are closed outlines smoothed by corner cutting; the marks lie on these lines.
_LEFT_LENS = [(34, 68), (70, 66), (108, 66), (111, 80), (100, 97), (76, 106), (52, 105), (37, 92), (33, 77)]
_RIGHT_LENS = [(TEMPLATE_SIZE - 1 - x, y) for x, y in _LEFT_LENS]
_BRIDGE = [(108, 66), (117, 66)]
_TEMPLES = [[(27, 70), (36, 68)], [(188, 68), (197, 70)]]
MASK_THICKNESS = 7.5
"""Rim width of the frame mask in template pixels (gives about 6% of the chip)."""


def _smooth(points: list, iterations: int = 2) -> np.ndarray:
    """Chaikin corner cutting of a closed polygon (keeps it inside the hull, rounds the corners)."""
    p = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        q = np.roll(p, -1, axis=0)
        p = np.stack([0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q], axis=1).reshape(-1, 2)
    return p


def _distance_to_path(points: np.ndarray, closed: bool, shape: tuple[int, int]) -> np.ndarray:
    """Distance from every pixel centre of an ``(H, W)`` grid to a polyline."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    grid = np.stack([xs, ys], axis=-1)[..., None, :]  # (H, W, 1, 2)
    a = points if closed else points[:-1]
    b = np.roll(points, -1, axis=0) if closed else points[1:]
    ab = b - a
    t = np.clip(((grid - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return np.sqrt(((grid - nearest) ** 2).sum(-1)).min(axis=-1)


def frame_distance(shape: tuple[int, int] = (TEMPLATE_SIZE, TEMPLATE_SIZE)) -> np.ndarray:
    """Distance (template pixels) from each pixel to the frame's centre lines; ``(224, 224)`` float32."""
    return _frame_distance(shape).copy()


@functools.lru_cache(maxsize=2)
def _frame_distance(shape: tuple[int, int]) -> np.ndarray:
    parts = [_distance_to_path(_smooth(_LEFT_LENS), True, shape)]
    parts.append(_distance_to_path(_smooth(_RIGHT_LENS), True, shape))
    for path in [_BRIDGE, *_TEMPLES]:
        parts.append(_distance_to_path(np.asarray(path, np.float64), False, shape))
    return np.min(parts, axis=0).astype(np.float32)


def eyeglass_mask(thickness: float = MASK_THICKNESS) -> np.ndarray:
    """The frame mask in the template: ``(224, 224)`` float32, 1 on the frame and 0 elsewhere.

    Args:
        thickness: rim width in template pixels; the default covers about 6% of the chip. Thinner rims
            (used by the procedural textures) lie inside the default mask.
    """
    if not 1.0 <= thickness <= 2 * MASK_THICKNESS:
        raise AdvfaceError(
            f"`thickness` must be between 1 and {2 * MASK_THICKNESS:g} template pixels. "
            f"Received: thickness={thickness!r}."
        )
    mask = (_frame_distance((TEMPLATE_SIZE, TEMPLATE_SIZE)) <= thickness / 2).astype(np.float32)
    inside = np.zeros_like(mask)
    inside[CANVAS_TOP : CANVAS_TOP + CANVAS_HEIGHT, CANVAS_LEFT : CANVAS_LEFT + CANVAS_WIDTH] = 1.0
    return mask * inside


def canvas_mask(thickness: float = MASK_THICKNESS) -> np.ndarray:
    """The frame mask cropped to the generator's canvas: ``(64, 176)`` float32."""
    return crop_canvas(eyeglass_mask(thickness))


def crop_canvas(template_image: np.ndarray) -> np.ndarray:
    """Cut the canvas (rows 53..116, cols 25..200) out of template-sized arrays ``(..., 224, 224[, C])``.

    Works on one image ``(224, 224[, C])`` or a batch ``(N, 224, 224, C)``.
    """
    a = np.asarray(template_image)
    batched = a.ndim == 4
    if a.shape[batched : batched + 2] != (TEMPLATE_SIZE, TEMPLATE_SIZE):
        raise AdvfaceError(f"Expected images of the 224x224 eyeglass template. Received: shape={a.shape}.")
    rows = slice(CANVAS_TOP, CANVAS_TOP + CANVAS_HEIGHT)
    cols = slice(CANVAS_LEFT, CANVAS_LEFT + CANVAS_WIDTH)
    return a[:, rows, cols] if batched else a[rows, cols]


def pad_canvas(canvas: np.ndarray) -> np.ndarray:
    """Place canvases ``(..., 64, 176, C)`` into black 224x224 templates (the AGN dataset's layout)."""
    a = np.asarray(canvas)
    if a.shape[-3:-1] != CANVAS_SHAPE:
        raise AdvfaceError(f"Expected 64x176 eyeglass canvases. Received: shape={a.shape}.")
    out = np.zeros(a.shape[:-3] + (TEMPLATE_SIZE, TEMPLATE_SIZE, a.shape[-1]), a.dtype)
    out[..., CANVAS_TOP : CANVAS_TOP + CANVAS_HEIGHT, CANVAS_LEFT : CANVAS_LEFT + CANVAS_WIDTH, :] = a
    return out


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, np.float64)
    return np.vstack([m, [0.0, 0.0, 1.0]]) if m.shape == (2, 3) else m


@functools.lru_cache(maxsize=16)
def _template_matrix(name: str) -> np.ndarray:
    from advface.alignment import Face, FaceAligner

    # Any face gives the same template-to-template map: every template is dlib's fit of the same face,
    # scaled and shifted. A synthetic, upright 5-point face keeps this independent of images; it is large
    # so that dlib's whole-pixel rectangles (a real face's map differs by about 1 image pixel in the chip's
    # span, well under a chip pixel) do not bias it.
    points = np.array([[140, 100], [120, 100], [60, 100], [80, 100], [100, 140]], np.float32) * 40
    face = Face(box=(2000.0, 2000.0, 6000.0, 6000.0), landmarks=points, score=1.0)
    aligner = FaceAligner()
    vgg = _homogeneous(aligner.chip_matrix(face, "vgg"))
    other = _homogeneous(aligner.chip_matrix(face, name))
    return other @ np.linalg.inv(vgg)


def template_matrix(template: str = "vgg") -> np.ndarray:
    """The 3x3 map from eyeglass-template pixels to the chip pixels of alignment ``template``.

    ``template_matrix("vgg")`` is the identity; for ``"dlib"`` it scales by 149/223 (same pose, 150 px).
    """
    from advface.alignment import get_template

    return _template_matrix(get_template(template).name).copy()


def image_matrix(chip_matrix: np.ndarray) -> np.ndarray:
    """The 3x3 map from eyeglass-template pixels to an image, given the face's ``vgg`` chip matrix.

    Args:
        chip_matrix: ``FaceAligner.chip_matrix(face, "vgg")`` (2x3, image -> VGG chip), or the
            ``matrix`` of an :class:`~advface.alignment.AlignedFace` cut with template ``vgg``.
    """
    return np.linalg.inv(_homogeneous(chip_matrix))


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(K, 2)`` points ``(x, y)`` through a 3x3 (projective) matrix."""
    p = np.asarray(points, np.float64)
    q = np.concatenate([p, np.ones((len(p), 1))], axis=1) @ _homogeneous(matrix).T
    return (q[:, :2] / q[:, 2:3]).astype(np.float32)


@dataclass(frozen=True)
class Placement:
    """Where glasses go in a set of face images of one size.

    Attributes:
        matrices: ``(N, 3, 3)`` maps from template pixels to each image's pixels.
        size: ``(height, width)`` of the images.
        physical: True when the matrices were fitted to printed marks (not the digital template pose).
    """

    matrices: np.ndarray = field(repr=False)
    size: tuple[int, int]
    physical: bool = False

    @classmethod
    def digital(cls, template: str, count: int) -> Placement:
        """The template pose on ``count`` chips of alignment ``template`` (the digital attack)."""
        from advface.alignment import get_template

        size = get_template(template).size
        return cls(np.repeat(template_matrix(template)[None], count, axis=0), (size, size))

    def __post_init__(self):
        try:
            m = np.asarray(self.matrices, np.float64)
        except (ValueError, TypeError):
            raise AdvfaceError("`matrices` must be an array of shape (N, 3, 3).") from None
        if m.ndim != 3 or m.shape[1:] != (3, 3) or not len(m):
            raise AdvfaceError(f"`matrices` must have shape (N, 3, 3). Received: shape={m.shape}.")
        if not np.isfinite(m).all() or np.any(np.abs(np.linalg.det(m)) < 1e-12):
            raise AdvfaceError("A placement matrix is singular or not finite; refit it from the marks.")
        object.__setattr__(self, "matrices", m)

    def __len__(self) -> int:
        return len(self.matrices)


def sampling_map(matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear sampling of the canvas for every pixel of an image of ``size`` under ``matrix``.

    Returns ``(index, weight)``, each ``(H * W, 4)``: flat canvas indices (row * 176 + col) of the 4
    neighbours and their bilinear weights (0 for neighbours outside the canvas).
    """
    h, w = size
    inverse = np.linalg.inv(_homogeneous(matrix))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pixels = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)], axis=1) @ inverse.T
    with np.errstate(divide="ignore", invalid="ignore"):
        sx = pixels[:, 0] / pixels[:, 2] - CANVAS_LEFT
        sy = pixels[:, 1] / pixels[:, 2] - CANVAS_TOP
    sx = np.nan_to_num(sx, nan=-10.0, posinf=-10.0, neginf=-10.0)
    sy = np.nan_to_num(sy, nan=-10.0, posinf=-10.0, neginf=-10.0)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    index, weight = [], []
    for dy, dx, wt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        cx, cy = x0 + dx, y0 + dy
        ok = (cx >= 0) & (cx < CANVAS_WIDTH) & (cy >= 0) & (cy < CANVAS_HEIGHT)
        index.append(np.where(ok, cy * CANVAS_WIDTH + cx, 0).astype(np.int32))
        weight.append(np.where(ok, wt, 0.0).astype(np.float32))
    return np.stack(index, axis=1), np.stack(weight, axis=1)


class GlassesRenderer:
    """Put generated glasses on face images through a :class:`Placement`; differentiable in the glasses.

    The canvas is premultiplied by the frame mask and both are warped with bilinear sampling, so the
    composite is ``face * (1 - mask') + (glasses * mask)'`` where ``'`` is the warp: face pixels off the
    frame, glasses pixels on it, a soft edge in between.

    Args:
        placement: one matrix per face image.
        mask: the canvas mask ``(64, 176)`` (default: :func:`canvas_mask`).
    """

    def __init__(self, placement: Placement, mask: np.ndarray | None = None):
        import tensorflow as tf

        self.placement = placement
        mask = canvas_mask() if mask is None else np.asarray(mask, np.float32)
        if mask.shape != CANVAS_SHAPE:
            raise AdvfaceError(f"The canvas mask must be 64x176. Received: shape={mask.shape}.")
        maps = [sampling_map(m, placement.size) for m in placement.matrices]
        self._index = tf.constant(np.stack([i for i, _ in maps]))  # (N, P, 4)
        self._weight = tf.constant(np.stack([w for _, w in maps]))  # (N, P, 4)
        self._mask = tf.constant(mask.reshape(1, -1, 1))  # (1, 64*176, 1)

    def warp(self, glasses, which):
        """Warped premultiplied glasses and mask.

        Args:
            glasses: ``(B, 64, 176, 3)`` float32 canvases in ``[0, 1]``.
            which: ``(B,)`` int indices of the placement (photo) for each canvas.

        Returns:
            ``(colour, alpha)``: ``(B, H, W, 3)`` and ``(B, H, W, 1)``.
        """
        import tensorflow as tf

        b = tf.shape(glasses)[0]
        h, w = self.placement.size
        flat = tf.reshape(glasses, (b, CANVAS_HEIGHT * CANVAS_WIDTH, 3)) * self._mask
        both = tf.concat([flat, tf.broadcast_to(self._mask, (b, CANVAS_HEIGHT * CANVAS_WIDTH, 1))], -1)
        index = tf.gather(self._index, which)  # (B, P, 4)
        weight = tf.gather(self._weight, which)[..., None]  # (B, P, 4, 1)
        sampled = tf.reduce_sum(tf.gather(both, index, batch_dims=1) * weight, axis=2)  # (B, P, 4)
        sampled = tf.reshape(sampled, (b, h, w, 4))
        return sampled[..., :3], sampled[..., 3:]

    def __call__(self, glasses, faces, which):
        """Faces ``(B, H, W, 3)`` in [0, 1] wearing ``glasses`` placed by ``which``; a tensor in [0, 1]."""
        import tensorflow as tf

        colour, alpha = self.warp(tf.convert_to_tensor(glasses, tf.float32), which)
        return tf.clip_by_value(tf.convert_to_tensor(faces, tf.float32) * (1.0 - alpha) + colour, 0.0, 1.0)
