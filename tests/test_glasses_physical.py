"""Physical eyeglasses: marks found in synthetic photos of printed frames, homographies recovered, sheets
printed to scale.

The photos are real aligned faces wearing a frame warped by a known homography near the template pose,
with the marks drawn where that homography puts them, then blurred, noised and JPEG-compressed.
"""

import io
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from advface.errors import AdvfaceError
from advface.glasses.geometry import (
    CANVAS_HEIGHT,
    CANVAS_LEFT,
    CANVAS_TOP,
    CANVAS_WIDTH,
    MARKS,
    Placement,
    apply_matrix,
    eyeglass_mask,
    template_matrix,
)
from advface.glasses.physical import (
    MarksError,
    draw_marks,
    find_marks,
    fit_homography,
    physical_placement,
    printable_frames,
    reprojection_error,
)
from advface.images import load_image

# Canvas corners (pixel centres) and the marks: where the recovered map must agree with the truth.
CORNERS = np.array(
    [
        (CANVAS_LEFT, CANVAS_TOP),
        (CANVAS_LEFT + CANVAS_WIDTH - 1, CANVAS_TOP),
        (CANVAS_LEFT + CANVAS_WIDTH - 1, CANVAS_TOP + CANVAS_HEIGHT - 1),
        (CANVAS_LEFT, CANVAS_TOP + CANVAS_HEIGHT - 1),
    ],
    np.float64,
)
CHECKED = np.concatenate([CORNERS, MARKS])
FRAME_CENTRE = (112.5, 86.0)


@pytest.fixture(scope="module")
def chips(samples, aligner):
    """Real 224x224 VGG-pose chips of two people."""
    return [aligner.align_one(load_image(samples / f"{name}.jpg"), "vgg").chip for name in ("obama", "biden")]


def homography(rotation_deg=0.0, scale=1.0, shift=(0.0, 0.0), perspective=(0.0, 0.0), template="vgg"):
    """A template -> chip map: perspective, rotation and scale about the frame's centre, a shift (in
    eyeglass-template pixels), then the template's own map to its chip."""
    to_chip = template_matrix(template)
    cx, cy = FRAME_CENTRE
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    tilt = np.array([[1, 0, 0], [0, 1, 0], [perspective[0], perspective[1], 1.0]])
    c, s = np.cos(np.deg2rad(rotation_deg)), np.sin(np.deg2rad(rotation_deg))
    similar = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) * [[scale], [scale], [1]]
    similar[:2, 2] = cx + shift[0], cy + shift[1]
    h = to_chip @ similar @ tilt @ to_centre
    return h / h[2, 2]


def random_homography(rng, template="vgg"):
    angle, scale = rng.uniform(-10, 10), rng.uniform(0.9, 1.1)
    return homography(angle, scale, rng.uniform(-8, 8, 2), rng.uniform(-1e-4, 1e-4, 2), template)


def photo(chip, h, rng, *, marks=MARKS, light=(1.0, 1.0, 1.0)):
    """``chip`` wearing a purple paper frame placed by ``h``, with green marks drawn at ``h`` of ``marks``,
    lit by ``light`` (RGB gains), blurred, noised and saved as a quality-90 JPEG."""
    size = chip.shape[1], chip.shape[0]
    mask = cv2.warpPerspective(eyeglass_mask(), h, size, flags=cv2.INTER_LINEAR)[..., None]
    image = chip * (1 - mask) + mask * np.array([0.45, 0.22, 0.5], np.float32)
    radius = 3.0 * np.sqrt(abs(np.linalg.det(h[:2, :2])))
    image = draw_marks(image, apply_matrix(h, marks), radius=radius)
    image = cv2.GaussianBlur(np.clip(image * np.float32(light), 0, 1), (0, 0), 0.7)
    image = np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1)
    data = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(data, "JPEG", quality=90)
    return np.asarray(Image.open(data), np.float32) / 255


def map_error(estimate, truth, points=CHECKED):
    """Largest distance in pixels between two maps over ``points``."""
    return float(np.linalg.norm(apply_matrix(estimate, points) - apply_matrix(truth, points), axis=1).max())


def overlay(image, found, h, scale=3):
    """Upscaled photo with the found marks (red rings) and the fitted canvas outline (blue)."""
    big = np.round(image * 255).astype(np.uint8)
    big = np.ascontiguousarray(cv2.resize(big, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC))
    corners = np.round((apply_matrix(h, CORNERS) + 0.5) * scale - 0.5).astype(np.int32)
    cv2.polylines(big, [corners], True, (40, 90, 255), 1, cv2.LINE_AA)
    for i, (x, y) in enumerate(found):
        centre = (int(round((x + 0.5) * scale - 0.5)), int(round((y + 0.5) * scale - 0.5)))
        cv2.circle(big, centre, 4 * scale, (255, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(big, str(i), (centre[0] + 4 * scale, centre[1] - 2 * scale), 0, 0.4, (255, 255, 0), 1)
    return big


def test_recovers_known_homographies(chips, artifacts):
    rng = np.random.default_rng(7)
    errors = {"expected": [], "agn order": []}
    for i in range(12):
        truth = random_homography(rng)
        image = photo(chips[i % 2], truth, rng)
        for how, expected in (("expected", MARKS), ("agn order", None)):
            found = find_marks(image, expected=expected, source=f"synthetic photo {i}")
            h = fit_homography(MARKS, found)
            errors[how].append(map_error(h, truth))
        if i == 0:
            Image.fromarray(overlay(image, found, h)).save(artifacts / "physical_detection.png")
    worst = {how: max(e) for how, e in errors.items()}
    assert max(worst.values()) < 1.0, worst


def test_marks_are_found_to_a_fraction_of_a_pixel(chips):
    rng = np.random.default_rng(3)
    truth = homography(4.0, 1.05, (2.3, -1.7), (5e-5, -5e-5))
    found = find_marks(photo(chips[0], truth, rng), expected=MARKS)
    assert np.abs(found - apply_matrix(truth, MARKS)).max() < 0.5
    assert found.shape == (7, 2) and found.dtype == np.float32


@pytest.mark.parametrize("angle", [-22.0, -15.0, 15.0, 22.0])
def test_tilted_frame_is_ordered_without_expected(chips, angle):
    rng = np.random.default_rng(11)
    truth = homography(angle, 1.0, (0.0, 6.0))
    marks = apply_matrix(truth, MARKS)
    found = find_marks(photo(chips[1], truth, rng), expected=None)
    np.testing.assert_allclose(found, marks, atol=0.6)
    if abs(angle) > 20:  # AGN's rule on raw image rows would have mixed top and bottom marks up here
        assert set(np.argsort(marks[:, 1])[:3]) != {0, 1, 2}


LIGHTS = {"dim": (0.3, 0.3, 0.3), "warm": (1.15, 0.95, 0.6), "cool": (0.7, 0.9, 1.2)}


@pytest.mark.parametrize("light", LIGHTS.values(), ids=LIGHTS.keys())
def test_marks_survive_dim_and_coloured_light(chips, light):
    rng = np.random.default_rng(19)
    for i in range(4):
        truth = random_homography(rng)
        image = photo(chips[i % 2], truth, rng, light=light)
        for expected in (MARKS, None):
            found = find_marks(image, expected=expected)
            assert np.linalg.norm(found - apply_matrix(truth, MARKS), axis=1).max() < 1.25


def test_six_visible_marks_say_what_is_missing(chips):
    rng = np.random.default_rng(5)
    image = photo(chips[0], homography(3.0), rng, marks=MARKS[:6])
    with pytest.raises(MarksError, match=r"found 6 green marks in photo_3\.jpg; need 7.*lighting.*visible"):
        find_marks(image, source="photo_3.jpg")
    with pytest.raises(MarksError, match="found 6 green marks"):
        find_marks(image, expected=MARKS)


def test_no_green_at_all(chips):
    with pytest.raises(MarksError, match="found 0 green marks in image; need 7.*printable_frames"):
        find_marks(chips[1])


def test_other_green_things_are_ignored(chips):
    rng = np.random.default_rng(2)
    truth = homography(-6.0, 0.95, (3.0, 2.0))
    image = photo(chips[0], truth, rng).copy()
    image[175:215, 20:70] = (0.1, 0.7, 0.15)  # a big green patch on the shirt
    image = draw_marks(image, [(200, 200)], radius=1.5)  # and a small green dot
    for expected in (MARKS, None):
        assert map_error(fit_homography(MARKS, find_marks(image, expected=expected)), truth) < 1.0


def test_fit_homography_exact_and_degenerate():
    truth = homography(8.0, 1.1, (4.0, -3.0), (1e-4, -8e-5))
    exact = apply_matrix(truth, MARKS)
    h = fit_homography(MARKS, exact)
    assert map_error(h, truth) < 1e-3 and abs(h[2, 2] - 1) < 1e-12
    assert reprojection_error(h, MARKS, exact) < 1e-3
    assert reprojection_error(np.eye(3), [(0, 0), (10, 0)], [(3, 4), (10, 0)]) == pytest.approx(np.sqrt(12.5))
    line = np.stack([np.linspace(20, 200, 7), np.full(7, 80.0)], axis=1)
    with pytest.raises(MarksError, match="do not look like the printed frame.*one line"):
        fit_homography(MARKS, line)
    swapped = exact[[0, 1, 2, 4, 3, 5, 6]]  # two marks of the right lens mixed up
    with pytest.raises(MarksError, match=r"do not look like the printed frame.*RMS error of .* px"):
        fit_homography(MARKS, swapped, source="photo_1.jpg")
    assert map_error(fit_homography(MARKS, swapped, tolerance=None), truth) > 1.0
    with pytest.raises(AdvfaceError, match=r"Received: detected.shape=\(6, 2\)"):
        fit_homography(MARKS, exact[:6])


@pytest.mark.parametrize("template", ["vgg", "dlib"])
def test_physical_placement(chips, aligner, samples, template):
    rng = np.random.default_rng(13)
    size = 224 if template == "vgg" else 150
    faces = chips if template == "vgg" else [
        aligner.align_one(load_image(samples / f"{n}.jpg"), template).chip for n in ("obama", "biden")
    ]
    truths = [random_homography(rng, template) for _ in faces]
    photos = np.stack([photo(face, h, rng) for face, h in zip(faces, truths, strict=True)])
    placement = physical_placement(photos, template=template)
    assert isinstance(placement, Placement) and placement.physical and placement.size == (size, size)
    assert max(map_error(m, h) for m, h in zip(placement.matrices, truths, strict=True)) < 1.0


def test_physical_placement_far_from_the_template_pose(chips):
    rng = np.random.default_rng(23)
    truths = [homography(30.0, 0.8), homography(-35.0, 0.8, (0.0, 10.0))]
    photos = np.stack([photo(chip, h, rng) for chip, h in zip(chips, truths, strict=True)])
    with pytest.raises(MarksError):  # nearest-to-expected matching mixes the marks up here ...
        fit_homography(MARKS, find_marks(photos[0], expected=MARKS))
    placement = physical_placement(photos)  # ... so the placement falls back to AGN's order
    assert max(map_error(m, h) for m, h in zip(placement.matrices, truths, strict=True)) < 1.0


def test_physical_placement_names_every_bad_photo(chips):
    rng = np.random.default_rng(17)
    good = photo(chips[0], homography(2.0), rng)
    bad = photo(chips[1], homography(-2.0), rng, marks=MARKS[:5])
    with pytest.raises(MarksError, match=r"1 of 2 photos cannot be used: .*found 5 green marks in b\.jpg"):
        physical_placement(np.stack([good, bad]), source_names=["a.jpg", "b.jpg"])
    with pytest.raises(AdvfaceError, match="must be 224x224"):
        physical_placement(np.stack([good])[:, :200, :200])


def test_draw_marks_is_antialiased_and_subpixel():
    image = np.full((40, 60, 3), 0.5, np.float32)
    out = draw_marks(image, [(20.3, 17.6)], radius=4.0)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.array_equal(image, np.full_like(image, 0.5))  # a copy was painted
    levels = np.unique(np.round(out[..., 1], 3))
    assert len(levels) > 4  # soft edge, not a binary disk
    green = np.clip(out[..., 1] - np.maximum(out[..., 0], out[..., 2]), 0, None)
    ys, xs = np.mgrid[0:40, 0:60]
    centre = (green * xs).sum() / green.sum(), (green * ys).sum() / green.sum()
    np.testing.assert_allclose(centre, (20.3, 17.6), atol=0.02)


def canvas_texture(seed=1):
    """A smooth colourful canvas with no green-dominant pixel (G <= max(R, B))."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 1, (8, 22, 3)).astype(np.float32)
    canvas = np.clip(cv2.resize(small, (176, 64), interpolation=cv2.INTER_CUBIC), 0, 1)
    canvas[..., 1] = np.minimum(canvas[..., 1], np.maximum(canvas[..., 0], canvas[..., 2]))
    return canvas


def test_printable_frames_are_true_to_scale(tmp_path, artifacts):
    width_mm, dpi = 145.0, 300
    png, pdf = printable_frames(canvas_texture(), tmp_path / "sheet", width_mm=width_mm, dpi=dpi)
    assert (png.name, pdf.name) == ("sheet.png", "sheet.pdf")
    (artifacts / "physical_printable.png").write_bytes(png.read_bytes())

    # 1. A4 landscape: the PDF page box in points, the PNG in pixels with its dpi.
    box = re.search(rb"/MediaBox\s*\[\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*\]", pdf.read_bytes())
    assert box is not None
    a4_points = [0, 0, 297 / 25.4 * 72, 210 / 25.4 * 72]
    np.testing.assert_allclose([float(v) for v in box.groups()], a4_points, atol=0.01)
    with Image.open(png) as sheet:
        assert sheet.size == (round(297 / 25.4 * dpi), round(210 / 25.4 * dpi))
        np.testing.assert_allclose(sheet.info["dpi"], (dpi, dpi), atol=0.01)
        page = np.asarray(sheet.convert("RGB"), np.float32) / 255

    # 2. The marks, found on a 4x smaller copy, are in AGN's order and give the printed scale.
    f = 4
    small = cv2.resize(page, (page.shape[1] // f, page.shape[0] // f), interpolation=cv2.INTER_AREA)
    found = find_marks(small) * f + (f - 1) / 2  # back to full-page pixel centres
    h = fit_homography(MARKS, found, tolerance=1.0 * f)
    assert h[0, 0] > 0 and abs(h[0, 1] / h[0, 0]) < 5e-3 and abs(h[1, 0] / h[1, 1]) < 5e-3  # upright
    centred_t, centred_p = MARKS - MARKS.mean(0), found - found.mean(0)
    pixels_per_template_px = np.sqrt((centred_p**2).sum() / (centred_t**2).sum())
    columns = np.nonzero(eyeglass_mask().any(axis=0))[0]
    template_width = columns.max() - columns.min() + 1  # outer edge to outer edge
    printed_mm = pixels_per_template_px * template_width / dpi * 25.4
    assert printed_mm == pytest.approx(width_mm, rel=0.01)

    # 3. The frame's ink spans width_mm (between the cut lines, which lie 1 mm outside it).
    ink = (page.min(axis=-1) < 0.9)[: int(page.shape[0] * 0.5)]
    rows = np.nonzero(ink.any(axis=1))[0]
    cols = np.nonzero(ink[rows.min() : rows.max() + 1].any(axis=0))[0]
    outer_mm = (cols.max() - cols.min() + 1) / dpi * 25.4
    assert outer_mm == pytest.approx(width_mm + 2 * 1.0, abs=0.6)


def test_printable_frames_options_and_errors(tmp_path):
    png, pdf = printable_frames(canvas_texture(2), tmp_path / "plain.png", width_mm=120, dpi=100, marks=False)
    assert png == tmp_path / "plain.png" and pdf.is_file()
    with Image.open(png) as sheet:
        assert sheet.size == (round(297 / 25.4 * 100), round(210 / 25.4 * 100))
        page = np.asarray(sheet.convert("RGB"), np.float32) / 255
    with pytest.raises(MarksError, match="found 0 green marks"):
        find_marks(page)
    with pytest.raises(AdvfaceError, match=r"between 80 and 250 mm. Received: width_mm=300"):
        printable_frames(canvas_texture(), tmp_path / "x", width_mm=300)
    with pytest.raises(AdvfaceError, match=r"between 72 and 1200. Received: dpi=50"):
        printable_frames(canvas_texture(), tmp_path / "x", dpi=50)
    with pytest.raises(AdvfaceError, match=r"Received: glasses.shape=\(1, 64, 176, 3\). Pass one frame"):
        printable_frames(canvas_texture()[None], tmp_path / "x")
    with pytest.raises(AdvfaceError, match=r"must be in \[0, 1\]"):
        printable_frames(canvas_texture() * 255, tmp_path / "x")


def test_marks_on_face_in_a_full_frame(samples, aligner):
    """Marks drawn where printed frames sit on a real face are found to a pixel; none on the bare photo;
    a green patch away from the eyes is not taken for them."""
    from advface.glasses.geometry import MARKS, apply_matrix, image_matrix
    from advface.glasses.physical import draw_marks, marks_on_face

    image = load_image(samples / "obama.jpg")
    face = aligner.detect(image)[0]
    expected = apply_matrix(image_matrix(aligner.chip_matrix(face, "vgg")), MARKS)
    marked = draw_marks(image, expected, radius=4.0)
    found = marks_on_face(marked, face, aligner)
    assert found is not None and found.shape == (7, 2)
    assert np.abs(found - expected).max() < 1.0
    assert marks_on_face(image, face, aligner) is None
    elsewhere = draw_marks(image, expected + np.array([0.0, 0.6 * (face.box[3] - face.box[1])]), radius=4.0)
    assert marks_on_face(elsewhere, face, aligner) is None
