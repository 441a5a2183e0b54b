"""advface.alignment against dlib itself and the published templates, on the real sample photos."""

import dlib
import numpy as np
import pytest

from advface.alignment import TEMPLATES, AlignedFace, FaceAligner, Template, get_template
from advface.assets import dlib_model_path
from advface.errors import AdvfaceError, NoFaceError
from advface.images import load_image, to_uint8

# The sample photos with a face (the crops of obama.jpg and its RGBA copy are tested on their own).
FACE_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png")

# insightface's 5-point 112x112 template: eye centres, nose tip, mouth corners.
ARCFACE_POINTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
# OpenFace's outer eye corners and nose (iBUG points 36, 45, 33) in its 96x96 chip.
OPENFACE_POINTS = 96 * np.array([[0.19416, 0.16927], [0.78886, 0.15817], [0.49495, 0.51444]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.fixture(scope="module")
def photos(samples):
    return {name: load_image(samples / name) for name in FACE_PHOTOS}


@pytest.fixture(scope="module")
def faces(photos, aligner):
    return {name: aligner.detect(image) for name, image in photos.items()}


# 1. Detection and landmarks.


@pytest.mark.parametrize("name", FACE_PHOTOS)
def test_detects_faces(faces, name):
    found = faces[name]
    assert len(found) >= 1
    areas = [face.area for face in found]
    assert areas == sorted(areas, reverse=True)
    for face in found:
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        left, top, right, bottom = face.box
        centre = face.landmarks.mean(axis=0)
        assert left < centre[0] < right and top < centre[1] < bottom


@pytest.mark.parametrize("name", ["obama_partial_face.jpg", "obama_partial_face2.jpg", "32bit.png"])
def test_detects_partial_and_rgba_faces(samples, aligner, name):
    found = aligner.detect(load_image(samples / name))
    assert len(found) >= 1 and found[0].landmarks.shape == (5, 2)


@pytest.mark.parametrize("kind", ["flat grey", "astronaut background"])
def test_no_face(aligner, photos, kind):
    if kind == "flat grey":
        image = np.full((240, 320, 3), 0.5, np.float32)
    else:
        image = photos["astronaut.png"][:120, :120]  # the flag behind her
    assert aligner.detect(image) == []
    assert aligner.align(image, "arcface") == []
    with pytest.raises(NoFaceError, match="No face found in background.png"):
        aligner.align_one(image, source="background.png")


# 2. Chips: dlib's own chip, and the matrix dlib cuts them with.


def _dlib_reference_chip(image: np.ndarray) -> np.ndarray:
    """dlib.get_face_chip of the largest face, with dlib's own detector and 5-point model (uint8)."""
    pixels = to_uint8(image)
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    rects = dlib.get_frontal_face_detector()(pixels, 1)
    rect = max(rects, key=lambda r: r.width() * r.height())
    return dlib.get_face_chip(pixels, predictor(pixels, rect), size=150, padding=0.25).astype(np.float32)


@pytest.mark.parametrize("name", FACE_PHOTOS)
def test_dlib_template_is_dlibs_face_chip(aligner, photos, faces, name):
    chip = aligner.chip(photos[name], faces[name][0], "dlib")
    assert chip.shape == (150, 150, 3)
    difference = chip * 255 - _dlib_reference_chip(photos[name])
    # dlib resamples uint8 images with truncation, not rounding: each resampling step (the interpolation,
    # plus a pyramid level when the face is over twice the chip size) makes its chip 0.5 levels darker on
    # average and up to 1 level darker at a pixel. Ours is interpolated in float, so it is never darker,
    # at most 2 levels brighter, and 0.5 (no pyramid) or 1.0 (one pyramid level) brighter on average.
    assert difference.min() > -0.01
    assert difference.max() < 2.5
    assert difference.mean() < 1.1


@pytest.mark.parametrize("name", FACE_PHOTOS)
def test_chip_matrix_is_exact(aligner, photos, faces, name):
    # Cut chips out of coordinate images: chip pixel (j, i) then holds the image point dlib sampled there,
    # and chip_matrix must send that point back to (j, i). Bilinear interpolation is exact on these.
    face, arcface = faces[name][0], TEMPLATES["arcface"]
    template = Template("big-arcface", 400, arcface.padding, arcface.shift, "arcface pose, 400x400")
    height, width = photos[name].shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    details = aligner._chip_details(face, template)
    sampled = np.stack([dlib.extract_image_chip(xs, details), dlib.extract_image_chip(ys, details)], axis=-1)
    mapped = _apply(aligner.chip_matrix(face, template), sampled.reshape(-1, 2).astype(np.float64))
    grid_y, grid_x = np.mgrid[0:400, 0:400]
    expected = np.stack([grid_x, grid_y], axis=-1).reshape(-1, 2)
    inner = ((expected >= 5) & (expected < 395)).all(axis=1)  # the border is clamped to the image edge
    assert np.abs(mapped - expected)[inner].max() < 1e-3


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_chips_for_every_template(aligner, photos, faces, name):
    template = get_template(name)
    chip = aligner.chip(photos["obama2.jpg"], faces["obama2.jpg"][0], name)
    assert chip.shape == (template.size, template.size, 3) and chip.dtype == np.float32
    assert 0.0 <= chip.min() and chip.max() <= 1.0 and chip.std() > 0.05


def test_align_returns_aligned_faces(aligner, photos, faces):
    aligned = aligner.align_one(photos["biden.jpg"], "openface", source="biden.jpg")
    assert isinstance(aligned, AlignedFace) and aligned.template == "openface"
    assert aligned.face == faces["biden.jpg"][0]
    assert aligned.chip.shape == (96, 96, 3) and aligned.matrix.shape == (2, 3)
    np.testing.assert_array_equal(aligned.chip, aligner.chip(photos["biden.jpg"], aligned.face, "openface"))
    inside = _apply(aligned.matrix, aligned.face.landmarks)
    assert ((inside > 0) & (inside < 95)).all()


def test_templates_place_landmarks(photos):
    # With 68 points, where the chips put the points each model's template fixes. Measured on the
    # sample faces (dlib 20.0): ArcFace mean 3.75 px, OpenFace mean 3.27 px.
    aligner = FaceAligner(landmarks=68)
    arcface_errors, openface_errors = [], []
    for image in photos.values():
        face = aligner.detect(image)[0]
        points = face.landmarks.astype(np.float64)
        assert points.shape == (68, 2)
        eyes_nose_mouth = np.stack(
            [points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30], points[48], points[54]]
        )
        placed = _apply(aligner.chip_matrix(face, "arcface"), eyes_nose_mouth)
        arcface_errors.append(np.linalg.norm(placed - ARCFACE_POINTS, axis=1))
        placed = _apply(aligner.chip_matrix(face, "openface"), points[[36, 45, 33]])
        openface_errors.append(np.linalg.norm(placed - OPENFACE_POINTS, axis=1))
    assert np.mean(arcface_errors) < 4.5
    assert np.mean(openface_errors) < 4.0


# 3. Arguments.


def test_unknown_names():
    with pytest.raises(AdvfaceError, match=r"Received: template='mtcnn'\. Known: dlib, vgg, openface"):
        get_template("mtcnn")
    with pytest.raises(AdvfaceError, match=r"Received: detector='mtcnn'\. Known: hog, cnn"):
        FaceAligner(detector="mtcnn")
    with pytest.raises(AdvfaceError, match=r"Received: landmarks=6"):
        FaceAligner(landmarks=6)
    with pytest.raises(AdvfaceError, match=r"Received: upsample=5"):
        FaceAligner(upsample=5)


def test_chip_refuses_unknown_template(aligner, photos, faces):
    with pytest.raises(AdvfaceError, match="Received: template='large'"):
        aligner.chip(photos["obama.jpg"], faces["obama.jpg"][0], "large")


# 4. The MMOD CNN detector.


@pytest.mark.slow
def test_cnn_detector(photos, faces):
    half = np.ascontiguousarray(photos["obama2.jpg"][::2, ::2])
    found = FaceAligner(detector="cnn", upsample=0).detect(half)
    assert len(found) >= 1
    assert found[0].landmarks.shape == (5, 2) and found[0].score > 0
    # The same face as the HOG detector's, at half the resolution.
    left, top, right, bottom = (v / 2 for v in faces["obama2.jpg"][0].box)
    x, y = found[0].landmarks.mean(axis=0)
    assert left < x < right and top < y < bottom
