"""Procedural eyeglass frames: training data for the AGN generator when the original dataset is absent.

The AGN attack (Sharif et al., "A general framework for adversarial examples with objectives", 2019)
trains a DCGAN on 16,681 images of real eyeglass frames, each a 224x224 PNG with the frame on black in
the pose of the eyeglass template. :func:`render_eyeglasses` paints look-alikes on the 64x176 generator
canvas: a frame of random rim thickness (inside the default :func:`~advface.glasses.geometry.canvas_mask`)
in one of :data:`STYLES`, shaded as a rounded rim lit from above, and exactly black off the rim.
:func:`write_eyeglasses` stores them in the dataset's layout (resumably) and :func:`load_eyeglasses` reads
that layout back, from our files or from the original dataset.

Every image's randomness comes from ``(seed, chunk)`` for fixed chunks of :data:`CHUNK` images, so an
image depends only on the seed and its index, however the work was split or interrupted.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from advface.errors import AdvfaceError, ImageError
from advface.glasses.geometry import (
    CANVAS_SHAPE,
    MASK_THICKNESS,
    TEMPLATE_SIZE,
    canvas_mask,
    crop_canvas,
    eyeglass_mask,
    frame_distance,
    pad_canvas,
)
from advface.images import load_image, to_uint8
from advface.progress import ProgressCallback, report

STYLES = ("solid", "two-tone", "gradient", "tortoiseshell", "patterned")
"""Frame styles :func:`render_eyeglasses` paints."""
_STYLE_WEIGHTS = np.array([0.32, 0.18, 0.14, 0.22, 0.14])  # solid frames are the most common

CHUNK = 256
"""Images rendered from one random stream ``np.random.default_rng([seed, chunk])``."""
MASK_NAME = "eyeglasses_mask.png"
_SUFFIXES = (".png", ".jpg", ".jpeg")
_HOW_TO_GET_DATA = (
    "Make training data with `advface glasses data --out DIR` or point at the AGN eyeglasses dataset "
    "(224x224 PNGs, frames on black)."
)

# Frame colours (sRGB in [0, 1]), how often each is drawn, and whether it is metal (sharper, tinted
# highlights). Black and browns dominate, as in real collections; bright colours are occasional.
_PALETTE = np.array(
    [
        # r,    g,    b,  weight, metal
        (0.06, 0.06, 0.07, 0.20, 0),  # black
        (0.13, 0.13, 0.14, 0.07, 0),  # matte charcoal
        (0.22, 0.13, 0.07, 0.09, 0),  # dark brown
        (0.42, 0.25, 0.12, 0.06, 0),  # chestnut
        (0.70, 0.45, 0.18, 0.05, 0),  # amber / honey
        (0.07, 0.09, 0.25, 0.06, 0),  # navy
        (0.36, 0.05, 0.11, 0.05, 0),  # burgundy
        (0.34, 0.35, 0.37, 0.06, 0),  # grey
        (0.62, 0.63, 0.65, 0.04, 0),  # crystal / translucent grey
        (0.80, 0.64, 0.32, 0.08, 1),  # gold
        (0.72, 0.73, 0.75, 0.07, 1),  # silver
        (0.28, 0.29, 0.31, 0.05, 1),  # gunmetal
        (0.75, 0.08, 0.07, 0.03, 0),  # red
        (0.08, 0.28, 0.72, 0.03, 0),  # blue
        (0.09, 0.42, 0.20, 0.02, 0),  # green
        (0.30, 0.32, 0.18, 0.02, 0),  # olive
        (0.78, 0.52, 0.55, 0.02, 0),  # rose
    ]
)
# Tortoiseshell: (dark spots, body, light flecks).
_TORTOISE = np.array(
    [
        [(0.10, 0.05, 0.02), (0.45, 0.22, 0.07), (0.80, 0.52, 0.20)],  # classic
        [(0.05, 0.03, 0.02), (0.26, 0.13, 0.05), (0.55, 0.32, 0.12)],  # dark havana
        [(0.30, 0.16, 0.06), (0.72, 0.47, 0.20), (0.92, 0.74, 0.44)],  # blonde
        [(0.07, 0.07, 0.07), (0.32, 0.30, 0.27), (0.62, 0.58, 0.52)],  # grey
        [(0.20, 0.04, 0.04), (0.52, 0.16, 0.08), (0.85, 0.45, 0.25)],  # red havana
    ]
)
# Accents for two-tone and patterned frames: light ones for dark frames, dark ones for light frames.
_LIGHT_ACCENTS = np.array(
    [(0.80, 0.78, 0.72), (0.80, 0.64, 0.32), (0.72, 0.73, 0.75), (0.85, 0.15, 0.12), (0.20, 0.50, 0.90)]
)
_DARK_ACCENTS = np.array([(0.04, 0.04, 0.05), (0.22, 0.13, 0.07), (0.07, 0.09, 0.25), (0.36, 0.05, 0.11)])
_CAMOUFLAGE = np.array(
    [
        [(0.20, 0.24, 0.12), (0.38, 0.36, 0.20), (0.12, 0.10, 0.06), (0.55, 0.50, 0.34)],  # woodland
        [(0.30, 0.30, 0.31), (0.55, 0.55, 0.56), (0.10, 0.10, 0.11), (0.78, 0.78, 0.78)],  # urban
        [(0.55, 0.45, 0.30), (0.72, 0.62, 0.44), (0.35, 0.26, 0.16), (0.82, 0.76, 0.60)],  # desert
    ]
)


@functools.lru_cache(maxsize=1)
def _geometry() -> dict[str, np.ndarray]:
    """The ``P`` pixels of the default canvas mask (where any frame lies) and the frame's maps there.

    Every map is a ``(P,)`` float32 array; ``index`` holds the pixels' flat indices in the 64x176 canvas.
    """
    distance = frame_distance()
    gy, gx = np.gradient(distance.astype(np.float64))
    norm = np.maximum(np.hypot(gx, gy), 1e-6)
    band = distance <= 0.75
    lens = ndimage.binary_fill_holes(band) & ~band  # inside the lens outlines
    ys, xs = np.mgrid[0 : CANVAS_SHAPE[0], 0 : CANVAS_SHAPE[1]]
    maps = {
        "distance": distance,
        "gx": gx / norm,  # unit vector in the image plane, away from the centre line
        "gy": gy / norm,
        "inner": lens,  # rim pixels on the lens side of the centre line
    }
    index = np.flatnonzero(canvas_mask())
    pixels = {name: crop_canvas(m).ravel()[index].astype(np.float32) for name, m in maps.items()}
    pixels["ys"] = ys.ravel()[index].astype(np.float32)
    pixels["xs"] = xs.ravel()[index].astype(np.float32)
    # 1 on the top bar and the bridge (canvas rows up to ~22), 0 on the lower rims.
    pixels["top"] = np.clip((40.0 - pixels["ys"]) / 18.0, 0.0, 1.0)
    pixels["index"] = index
    return pixels


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# Cell sizes (rows, cols) of the noise fields: tortoiseshell spots at three scales, two for camouflage.
_NOISE_CELLS = {"coarse": (8, 13), "mid": (4, 6), "fine": (2, 3), "camo_a": (6, 10), "camo_b": (4, 7)}


def _noise_grid(rng: np.random.Generator, cell: tuple[int, int]) -> np.ndarray:
    """White noise ``(CHUNK, h, w)`` on a lattice of ``cell``-sized cells covering the canvas."""
    shape = (CHUNK, CANVAS_SHAPE[0] // cell[0] + 2, CANVAS_SHAPE[1] // cell[1] + 2)
    return rng.standard_normal(shape, np.float32)


def _noise(grid: np.ndarray, cell: tuple[int, int], g: dict) -> np.ndarray:
    """Smooth value noise ``(k, P)`` at the frame's pixels from lattices ``(k, h, w)``; about unit variance.

    Lattice values are blended with smoothstep weights (classic value noise): blobs about a cell wide.
    """
    y, x = g["ys"] / cell[0], g["xs"] / cell[1]
    i, j = y.astype(int), x.astype(int)
    fy, fx = y - i, x - j
    wy, wx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    top = grid[:, i, j] * (1 - wx) + grid[:, i, j + 1] * wx
    bottom = grid[:, i + 1, j] * (1 - wx) + grid[:, i + 1, j + 1] * wx
    return (top * (1 - wy) + bottom * wy) * 1.45


def _pick(rng: np.random.Generator, table: np.ndarray) -> np.ndarray:
    """``CHUNK`` random rows of ``table``."""
    return table[rng.integers(len(table), size=CHUNK)]


def _draw(rng: np.random.Generator, styles: tuple[str, ...], thickness: tuple[float, float]) -> dict:
    """Per-image parameters for a whole chunk, each an array of ``CHUNK`` rows.

    Everything is drawn for all ``CHUNK`` images, even when fewer are rendered, so that image ``i`` of a
    chunk does not depend on how many are rendered; the noise lattices are drawn here for that reason.
    """
    weights = _STYLE_WEIGHTS[[STYLES.index(s) for s in styles]]
    colour = rng.choice(len(_PALETTE), size=CHUNK, p=_PALETTE[:, 3] / _PALETTE[:, 3].sum())
    base = _PALETTE[colour, :3] * rng.uniform(0.9, 1.1, (CHUNK, 1)) + rng.normal(0, 0.02, (CHUNK, 3))
    light = _pick(rng, _LIGHT_ACCENTS)
    dark = _pick(rng, _DARK_ACCENTS)
    luminance = base @ np.array([0.3, 0.59, 0.11])
    p = {
        "style": np.asarray(styles)[rng.choice(len(styles), size=CHUNK, p=weights / weights.sum())],
        "thickness": rng.uniform(*thickness, CHUNK),
        "bottom": rng.uniform(0.65, 1.0, CHUNK),  # lower rims are often thinner than the top bar
        "base": np.clip(base, 0.0, 1.0),
        "metal": _PALETTE[colour, 4].astype(bool),
        "accent": np.where((luminance < 0.4)[:, None], light, dark),
        "other": _PALETTE[rng.choice(len(_PALETTE), size=CHUNK), :3],
        "tortoise": _pick(rng, _TORTOISE) * rng.uniform(0.85, 1.15, (CHUNK, 1, 1)),
        "camouflage": _pick(rng, _CAMOUFLAGE),
        "variant": rng.integers(0, 4, CHUNK),  # which two-tone split, gradient or pattern
        "split": rng.uniform(20.0, 27.0, CHUNK),  # browline: canvas row where the top colour ends
        "period": rng.uniform(6.0, 12.0, CHUNK),
        "angle": rng.uniform(0.0, np.pi, CHUNK),
        "phase": rng.uniform(0.0, 2 * np.pi, CHUNK),
        "light": rng.uniform(-0.4, 0.4, CHUNK),  # horizontal tilt of the light, which comes from above
        "roundness": rng.uniform(0.55, 0.9, CHUNK),  # 0: flat rim, 1: round wire
        "gloss": rng.uniform(0.25, 0.6, CHUNK),
        "gain": rng.uniform(0.85, 1.15, CHUNK),
        "offset": rng.uniform(-0.03, 0.03, CHUNK),
        "contrast": rng.uniform(0.85, 1.15, CHUNK),
        "grain": rng.uniform(0.004, 0.02, CHUNK),
        **{name: _noise_grid(rng, cell) for name, cell in _NOISE_CELLS.items()},
    }
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in p.items()}


def _mix(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-image colours ``(k, 3)`` mixed by per-pixel weights ``(k, P)``: ``(k, P, 3)``."""
    w = weight[..., None]
    return a[:, None] * (1 - w) + b[:, None] * w


def _two_tone(p: dict, g: dict) -> np.ndarray:
    """Weight ``(k, P)`` of the second colour: browline (variants 0, 1) or an inner/outer split."""
    browline = _sigmoid((g["ys"] - p["split"][:, None]) / 0.7)
    return np.where((p["variant"] < 2)[:, None], browline, g["inner"])


def _gradient(p: dict, g: dict) -> np.ndarray:
    """Weight of the second colour: a vertical fade (variants 0, 1, 2) or a fade out from the bridge."""
    vertical = np.clip((g["ys"] - 12.0) / 42.0, 0.0, 1.0)
    horizontal = np.clip(np.abs(g["xs"] - 87.5) / 85.0, 0.0, 1.0)
    ramp = np.where((p["variant"] < 3)[:, None], vertical, horizontal)
    return ramp ** np.where(p["variant"] == 1, 0.6, 1.4)[:, None].astype(np.float32)


def _pattern(p: dict, g: dict) -> np.ndarray:
    """Albedo ``(k, P, 3)`` of stripes, dots, checks or camouflage (variants 0..3)."""
    period = p["period"][:, None]
    cos, sin = np.cos(p["angle"])[:, None], np.sin(p["angle"])[:, None]
    u = (g["xs"] * cos + g["ys"] * sin) / period
    v = (g["ys"] * cos - g["xs"] * sin) / period
    stripes = _sigmoid(4.0 * np.sin(2 * np.pi * u + p["phase"][:, None]))
    dots = _sigmoid((0.3 - np.hypot(u - np.round(u), v - np.round(v))) * 2.0 * period)
    checks = _sigmoid(12.0 * np.sin(2 * np.pi * u) * np.sin(2 * np.pi * v))
    weight = np.choose(np.minimum(p["variant"], 2)[:, None], [stripes, dots, checks])
    albedo = _mix(p["base"], p["accent"], weight)
    # Camouflage: four colours, by thresholding two noise fields.
    a, b = (_noise(p[name], _NOISE_CELLS[name], g) for name in ("camo_a", "camo_b"))
    index = (a > 0.2).astype(int) + 2 * (b > 0.45)
    camouflage = np.take_along_axis(p["camouflage"], index[..., None], axis=1)
    return np.where((p["variant"] == 3)[:, None, None], camouflage, albedo)


def _tortoiseshell(p: dict, g: dict) -> np.ndarray:
    """Mottled amber/brown albedo ``(k, P, 3)``: smooth noise at three scales, softly thresholded."""
    coarse, mid, fine = (_noise(p[name], _NOISE_CELLS[name], g) for name in ("coarse", "mid", "fine"))
    field = 0.6 * coarse + 0.35 * mid + 0.15 * fine
    dark = _sigmoid((field - 0.1) / 0.08)[..., None]
    light = _sigmoid((-field - 0.55) / 0.1)[..., None]
    shell = p["tortoise"][:, None]  # (k, 1, 3 tones, 3)
    body = shell[..., 1, :] * (1 - light) + shell[..., 2, :] * light
    return body * (1 - dark) + shell[..., 0, :] * dark


def _albedo(p: dict, g: dict) -> np.ndarray:
    """The frame's unlit colour ``(k, P, 3)`` in each image's style."""
    albedo = np.empty((len(p["style"]), len(g["index"]), 3), np.float32)
    for style in STYLES:
        which = p["style"] == style
        if not which.any():
            continue
        q = {key: value[which] for key, value in p.items()}
        if style == "solid":
            albedo[which] = q["base"][:, None]
        elif style == "two-tone":
            second = np.where((q["variant"] % 2 == 0)[:, None], q["accent"], q["other"])
            albedo[which] = _mix(q["base"], second, _two_tone(q, g))
        elif style == "gradient":
            second = np.where((q["variant"] == 0)[:, None], q["other"], 0.35 * q["base"] + 0.65 * q["accent"])
            albedo[which] = _mix(q["base"], second, _gradient(q, g))
        elif style == "tortoiseshell":
            albedo[which] = _tortoiseshell(q, g)
        else:
            albedo[which] = _pattern(q, g)
    return albedo


def _shade(albedo: np.ndarray, p: dict, g: dict) -> tuple[np.ndarray, np.ndarray]:
    """Light the rims as rounded bars lit from above: colour ``(k, P, 3)`` and coverage ``(k, P)``."""
    col = (slice(None), None)
    radius = p["thickness"][col] / 2 * (p["bottom"][col] + (1 - p["bottom"][col]) * g["top"])
    distance = g["distance"]
    # Exactly the pixels of canvas_mask(thickness), with a one-pixel soft edge.
    coverage = np.where(distance <= radius, np.clip(radius - distance + 0.5, 0.0, 1.0), 0.0)
    # 1. The rim's surface normal: tilted away from the centre line, more so towards the edges (bevel).
    u = np.clip(distance / radius, 0.0, 1.0) * p["roundness"][col]
    nz = np.sqrt(1.0 - u * u)
    nx, ny = g["gx"] * u, g["gy"] * u
    # 2. Diffuse light from above and a little to one side (image y points down).
    lx, ly, lz = p["light"][col], -0.7, 1.0
    length = np.sqrt(lx * lx + ly * ly + lz * lz)
    diffuse = np.clip((nx * lx + ny * ly + nz * lz) / length, 0.0, 1.0)
    # 3. Blinn-Phong highlight (half vector between the light and the viewer), strongest on the top bar.
    hx, hy, hz = lx / length, ly / length, lz / length + 1.0
    half = np.sqrt(hx * hx + hy * hy + hz * hz)
    facing = np.clip((nx * hx + ny * hy + nz * hz) / half, 0.0, 1.0)
    metal = p["metal"][col]
    broad, sharp = (np.where(metal, a, b).astype(np.float32) for a, b in ((12.0, 8.0), (60.0, 40.0)))
    highlight = (0.5 * facing**broad + facing**sharp) * (0.35 + 0.65 * g["top"])
    highlight = highlight * np.where(metal, np.float32(0.75), p["gloss"][col])
    shine = np.where(metal[..., None], 0.5 * albedo + 0.5, 1.0)  # metal tints its highlights
    diffuse = diffuse * np.where(metal, 0.92, 0.8).astype(np.float32)
    return albedo * (0.3 + diffuse)[..., None] + highlight[..., None] * shine, coverage


def _render_chunk(
    seed: int, chunk: int, count: int, styles: tuple[str, ...], thickness: tuple[float, float]
) -> np.ndarray:
    """The first ``count`` images of chunk ``chunk``, ``(count, 64, 176, 3)``; the same for any ``count``."""
    rng = np.random.default_rng([seed, chunk])
    p = {key: value[:count] for key, value in _draw(rng, styles, thickness).items()}
    g = _geometry()
    # 1. Colour and light the frame's pixels.
    lit, coverage = _shade(_albedo(p, g), p, g)
    # 2. Contrast about each frame's mean colour, brightness, then grain: the stream's last draw, filled
    #    image by image, so a prefix of it does not depend on count either.
    col = (slice(None), None, None)
    mean = (lit * coverage[..., None]).sum(1, keepdims=True) / coverage.sum(1)[:, None, None]
    frame = (mean + (lit - mean) * p["contrast"][col]) * p["gain"][col] + p["offset"][col]
    frame = frame + rng.standard_normal(frame.shape, np.float32) * p["grain"][col]
    # 3. Onto the black canvas.
    image = np.zeros((count, CANVAS_SHAPE[0] * CANVAS_SHAPE[1], 3), np.float32)
    image[:, g["index"]] = np.clip(frame * coverage[..., None], 0.0, 1.0)
    return image.reshape(count, *CANVAS_SHAPE, 3)


def _check_args(n: int, styles, thickness) -> tuple[tuple[str, ...], tuple[float, float]]:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise AdvfaceError(f"`n` must be a non-negative integer (number of images). Received: n={n!r}.")
    styles = STYLES if styles is None else ((styles,) if isinstance(styles, str) else tuple(styles))
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise AdvfaceError(
            f"`styles` must be a non-empty selection of {', '.join(STYLES)}. Received: styles={styles!r}."
        )
    low, high = (float(t) for t in thickness)
    if not 1.0 <= low <= high <= MASK_THICKNESS:
        raise AdvfaceError(
            f"`thickness` must be a range (low, high) with 1 <= low <= high <= {MASK_THICKNESS:g} (the "
            f"default mask's rim). Received: thickness={thickness!r}."
        )
    return styles, (low, high)


def render_eyeglasses(
    n: int, *, seed: int = 0, styles=None, thickness: tuple[float, float] = (3.5, 7.5)
) -> np.ndarray:
    """Paint ``n`` eyeglass frames on the generator's canvas, like the AGN training images.

    Args:
        n: number of images.
        seed: the images depend only on ``seed`` and their index (see :data:`CHUNK`).
        styles: names from :data:`STYLES` to draw from (default: all, solid ones most often).
        thickness: range of the rim width in template pixels, drawn per image; at most the default
            mask's 7.5, so every frame lies inside :func:`~advface.glasses.geometry.canvas_mask`.

    Returns:
        ``(n, 64, 176, 3)`` float32 RGB in ``[0, 1]``, exactly 0 off the frame.
    """
    styles, thickness = _check_args(n, styles, thickness)
    chunks = [
        _render_chunk(seed, c, min(CHUNK, n - c * CHUNK), styles, thickness) for c in range(-(-n // CHUNK))
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, *CANVAS_SHAPE, 3), np.float32)


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 image atomically: a reader (or a resumed run) never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(temporary, format="PNG")
    os.replace(temporary, path)


def write_eyeglasses(
    folder: str | Path, n: int, *, seed: int = 0, progress: ProgressCallback | None = None
) -> list[Path]:
    """Write ``n`` procedural frames in the AGN dataset's layout; re-running resumes where it stopped.

    Each image is a 224x224 RGB PNG ``glassesNNNNNN.png``, the frame on black with the canvas at rows
    53..116, cols 25..200; ``eyeglasses_mask.png`` holds the default frame mask (white on black). Files
    already there are kept (they are written under a temporary name and renamed, so they are complete),
    and image ``i`` is the same whether it was written in one run or several.

    Args:
        folder: where to write (created if needed).
        n: number of images.
        seed: see :func:`render_eyeglasses`; image ``i`` equals ``render_eyeglasses(n, seed=seed)[i]``
            after 8-bit rounding.
        progress: called once per chunk of :data:`CHUNK` images with stage ``"eyeglasses"``.

    Returns:
        The ``n`` image paths, in index order (without the mask).
    """
    styles, thickness = _check_args(n, None, (3.5, 7.5))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MASK_NAME).is_file():
        _write_png(folder / MASK_NAME, np.repeat(to_uint8(eyeglass_mask())[..., None], 3, axis=-1))
    paths = [folder / f"glasses{i:06d}.png" for i in range(n)]
    total = -(-n // CHUNK)
    for chunk in range(total):
        start = chunk * CHUNK
        missing = [i for i in range(start, min(n, start + CHUNK)) if not paths[i].is_file()]
        if missing:
            canvases = _render_chunk(seed, chunk, missing[-1] + 1 - start, styles, thickness)
            templates = pad_canvas(to_uint8(canvases))
            for i in missing:
                _write_png(paths[i], templates[i - start])
        report(progress, chunk + 1, total, "eyeglasses")
    return paths


@dataclass(frozen=True)
class EyeglassSet:
    """Eyeglass frames read from a folder.

    Attributes:
        images: ``(N, 64, 176, 3)`` float32 RGB canvases in ``[0, 1]``.
        paths: the file of each image.
        skipped: ``(path, reason)`` for each file that could not be used.
    """

    images: np.ndarray
    paths: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]

    def __len__(self) -> int:
        return len(self.images)


def _read_canvas(path: Path) -> np.ndarray:
    """One image as a ``(64, 176, 3)`` canvas; ImageError if it is unreadable or of another size."""
    image = load_image(path)
    if image.shape[:2] == (TEMPLATE_SIZE, TEMPLATE_SIZE):
        return crop_canvas(image)
    if image.shape[:2] == CANVAS_SHAPE:
        return image
    raise ImageError(
        f"Expected a 224x224 eyeglass-template image or a 64x176 canvas. "
        f"Received: size={image.shape[1]}x{image.shape[0]} (width x height) in {path}."
    )


def load_eyeglasses(folder: str | Path, *, limit: int | None = None, seed: int = 0) -> EyeglassSet:
    """Read a folder of eyeglass frames: the AGN dataset's layout or 64x176 canvases.

    Reads the PNG and JPG files directly in ``folder`` in name order, except those whose name contains
    "mask". 224x224 images are cropped to the canvas (rows 53..116, cols 25..200). A file that cannot be
    decoded or has another size is listed in ``skipped`` rather than stopping the load.

    Args:
        folder: the folder of images.
        limit: read at most this many, a random subset drawn with ``seed`` (AGN trains on 1,000 random
            frames); ``None`` reads all.
        seed: seeds the subset.

    Returns:
        An :class:`EyeglassSet`, sorted by path.

    Raises:
        AdvfaceError: the folder is missing or holds no usable image; ``limit`` is not positive.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AdvfaceError(
            f"Expected a folder of eyeglass images. Received: folder={folder} (missing). " + _HOW_TO_GET_DATA
        )
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1
    ):
        raise AdvfaceError(f"`limit` must be a positive integer or None. Received: limit={limit!r}.")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in _SUFFIXES and "mask" not in p.name.lower() and p.is_file()
    )
    # 1. Visit the files in a seeded random order when sampling, so a bad file is replaced by another.
    order = np.random.default_rng(seed).permutation(len(files)) if limit is not None else range(len(files))
    wanted = len(files) if limit is None else min(limit, len(files))
    images = np.empty((wanted, *CANVAS_SHAPE, 3), np.float32)
    chosen, skipped = [], []
    for i in order:
        if len(chosen) == wanted:
            break
        try:
            images[len(chosen)] = _read_canvas(files[i])
        except ImageError as exc:
            skipped.append((files[i], str(exc)))
            continue
        chosen.append(i)
    if not chosen:
        raise AdvfaceError(
            f"Found no usable eyeglass image (PNG or JPG, 224x224 or 64x176) in {folder}. "
            f"Received: {len(files)} image files, {len(skipped)} unreadable or of another size. "
            + _HOW_TO_GET_DATA
        )
    # 2. Back to name order.
    rank = np.argsort(chosen)
    return EyeglassSet(
        images=images[: len(chosen)][rank],
        paths=tuple(files[chosen[r]] for r in rank),
        skipped=tuple(sorted(skipped)),
    )
