"""Measurable face attributes of rendered images, from dlib's 68 landmarks.

InterFaceGAN learns an attribute direction from generated faces labelled by an attribute predictor. No
attribute classifier ships offline, so advface labels faces with quantities it can measure from landmarks
(dlib's 68-point model, the one ``FaceAligner(landmarks=68)`` uses):

=============  ===================================================================================
attribute      measurement
=============  ===================================================================================
yaw            head rotation about the vertical axis, degrees (positive: the face turns towards the
               image's right), from ``cv2.solvePnP`` of six landmarks on a generic 3-D face
pitch          rotation about the horizontal axis, degrees (positive: the face looks up)
smile          mouth width / outer-eye-corner distance
mouth          mouth opening: mean inner-lip gap / eye-to-chin height
eyes           eye opening: eye aspect ratio (Soukupova and Cech 2016), mean of both eyes
size           face size: outer-eye-corner distance / image width
brightness     mean luminance (Rec. 601) inside the landmarks' convex hull, in [0, 1]
=============  ===================================================================================

Generated images are small (64x64 for ``digiface-dcgan``), so images are upsampled until their shorter side
is 256 pixels before the landmark model runs. Where the face sits is given by a box (fractions of the image;
a generator's faces are centred crops) or found by dlib's detector; an image without a face gets NaN
scores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from advface.errors import AdvfaceError
from advface.images import check_images

ATTRIBUTES = ("yaw", "pitch", "smile", "mouth", "eyes", "size", "brightness")
UNITS = {
    "yaw": "degrees",
    "pitch": "degrees",
    "smile": "mouth width / eye distance",
    "mouth": "lip gap / face height",
    "eyes": "eye aspect ratio",
    "size": "eye distance / image width",
    "brightness": "luminance in [0, 1]",
}
WORK_SIZE = 256

# A generic head (millimetres; x to the face's left as seen in the image, y up, z towards the camera):
# nose tip, chin, outer eye corners, mouth corners. Approximate adult proportions; only ratios matter.
_MODEL_POINTS = np.array(
    [
        (0.0, 0.0, 0.0),  # 30 nose tip
        (0.0, -63.0, -12.0),  # 8 chin
        (-43.0, 32.0, -26.0),  # 36 outer corner of the eye on the image's left
        (43.0, 32.0, -26.0),  # 45 outer corner of the eye on the image's right
        (-28.0, -28.0, -22.0),  # 48 mouth corner, image left
        (28.0, -28.0, -22.0),  # 54 mouth corner, image right
    ]
)
_PNP_LANDMARKS = (30, 8, 36, 45, 48, 54)


@dataclass(frozen=True)
class FaceMeasurements:
    """Scores of a batch of images.

    Attributes:
        scores: ``{attribute: (N,) float64}``, NaN where no face was found.
        landmarks: ``(N, 68, 2)`` in the input image's pixels, NaN where no face was found.
        found: ``(N,)`` bool.
    """

    scores: dict
    landmarks: np.ndarray
    found: np.ndarray


@functools.cache
def _aligner(upsample: int):
    from advface.alignment import FaceAligner

    return FaceAligner(detector="hog", landmarks=68, upsample=upsample)


def head_pose(points: np.ndarray, size: float) -> tuple[float, float]:
    """Yaw and pitch in degrees of one face from its 68 landmarks (pixels of an image ``size`` wide)."""
    image_points = points[list(_PNP_LANDMARKS)].astype(np.float64)
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], dtype=np.float64)
    # Turn the model 180 degrees about x into the camera's frame (x right, y down, z away): a rotation,
    # not a mirror, so a frontal face has the identity rotation.
    # Start from a frontal face at the distance its eye span implies: without a guess the iterative solver
    # often lands on the mirrored pose.
    span = np.linalg.norm(image_points[3] - image_points[2])
    distance = size * np.ptp(_MODEL_POINTS[2:4, 0]) / max(span, 1e-6)
    rvec, tvec = np.zeros((3, 1)), np.array([[0.0], [0.0], [distance]])
    ok, rvec, _ = cv2.solvePnP(
        _MODEL_POINTS * np.array([1.0, -1.0, -1.0]),
        image_points,
        camera,
        None,
        rvec,
        tvec,
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return float("nan"), float("nan")
    rotation, _ = cv2.Rodrigues(rvec)
    # Where the face looks, in camera coordinates (towards the camera, -z, when frontal).
    forward = rotation @ np.array([0.0, 0.0, -1.0])
    yaw = np.degrees(np.arctan2(forward[0], -forward[2]))
    # Yaw: the gaze's heading in the horizontal plane; pitch: its elevation above that plane.
    pitch = np.degrees(np.arcsin(np.clip(-forward[1], -1.0, 1.0)))
    return float(yaw), float(pitch)


def _distance(points, a, b):
    return float(np.linalg.norm(points[a] - points[b]))


def _scores(points: np.ndarray, image: np.ndarray) -> dict:
    """Every attribute of one face: ``points`` (68, 2) in the pixels of ``image`` (H, W, 3) in [0, 1]."""
    height, width = image.shape[:2]
    yaw, pitch = head_pose(points, float(width))
    eye_distance = _distance(points, 36, 45)
    eye_middle = (points[36] + points[45]) / 2
    face_height = float(np.linalg.norm(points[8] - eye_middle))
    lip_gap = np.mean([_distance(points, 61, 67), _distance(points, 62, 66), _distance(points, 63, 65)])
    ear = [
        (_distance(points, p[1], p[5]) + _distance(points, p[2], p[4])) / (2 * _distance(points, p[0], p[3]))
        for p in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
    ]
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    luminance = image @ np.array([0.299, 0.587, 0.114], dtype=image.dtype)
    return {
        "yaw": yaw,
        "pitch": pitch,
        "smile": _distance(points, 48, 54) / eye_distance,
        "mouth": lip_gap / face_height,
        "eyes": float(np.mean(ear)),
        "size": eye_distance / width,
        "brightness": float(luminance[mask > 0].mean()) if mask.any() else float("nan"),
    }


def measure_faces(images, *, box: tuple[float, float, float, float] | None = None) -> FaceMeasurements:
    """Landmark every image and measure :data:`ATTRIBUTES`.

    Args:
        images: float32 ``(N, H, W, 3)`` in ``[0, 1]``.
        box: where the face is, as fractions ``(left, top, right, bottom)`` of the image (dlib's box
            convention: brows to chin), or None to detect it (dlib HOG; frontal faces only).

    Returns:
        :class:`FaceMeasurements` in the input image's pixel coordinates. With a ``box`` every image counts
        as found: the landmarks are fitted in the box whatever it holds.
    """
    images = check_images(images, name="images")
    if box is not None and not (len(box) == 4 and 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise AdvfaceError(
            f"`box` is (left, top, right, bottom) as fractions of the image. Received: box={box!r}."
        )
    n, height, width = images.shape[:3]
    landmarks = np.full((n, 68, 2), np.nan)
    scores = {name: np.full(n, np.nan) for name in ATTRIBUTES}
    # Small (generated) images are upsampled to a shorter side of WORK_SIZE; larger ones are used as they are.
    zoom = max(1.0, WORK_SIZE / min(height, width))
    work = (int(round(width * zoom)), int(round(height * zoom)))
    aligner = _aligner(0 if zoom > 1 else 1)
    for i, image in enumerate(images):
        # 1. Upsample to the size the landmark model works at.
        big = image if zoom == 1.0 else cv2.resize(image, work, interpolation=cv2.INTER_CUBIC).clip(0, 1)
        # 2. The face: in the given box (no detection), or the largest one advface's aligner finds.
        if box is not None:
            face = aligner.face_in_box(
                big, tuple(v * size for v, size in zip(box, (*work, *work), strict=True))
            )
        else:
            found = aligner.detect(big)
            if not found:
                continue
            face = found[0]
        # 3. The measurements (on the working image: every measure is a ratio or an angle).
        points = face.landmarks.astype(np.float64)
        for name, value in _scores(points, np.clip(np.round(big * 255) / 255, 0, 1)).items():
            scores[name][i] = value
        landmarks[i] = points / zoom
    return FaceMeasurements(scores=scores, landmarks=landmarks, found=~np.isnan(landmarks[:, 0, 0]))
