"""Face detection, landmarks and aligned face chips with dlib.

Every template is a dlib face chip: dlib fits its mean face to the detected landmarks (5 or 68 points)
with a similarity transform and cuts a square around it with ``padding`` (fraction of the face size on
each side). A template may also shift that square by ``shift`` (fractions of the chip), which lets the
chips of other model families share dlib's fit:

==========  =====  ========  ================  ==============================================================
template    size   padding   shift (x, y)      used by
==========  =====  ========  ================  ==============================================================
dlib        150    0.25      (0, 0)            dlib-resnet (exactly ``dlib.get_face_chip(img, shape, 150)``)
vgg         224    0.25      (0, 0)            the AGN VGG classifiers (agns-port: dlib chips resized to 224)
openface    96     0.1073    (0.0001, -0.0989) OpenFace nn4.small2 (its outer-eyes-and-nose pose)
arcface     112    0.3815    (0.0034, 0.1429)  ArcFace / insightface (the standard 5-point 112x112 template)
facenet     160    0.1972    (0.0027, 0.0721)  FaceNet / facenet-pytorch (its MTCNN box, as a square)
==========  =====  ========  ================  ==============================================================

The openface and arcface rows were fitted once (least squares, 7 real faces, 68-point landmarks) so that
the chip puts the eyes, nose and mouth corners where those templates want them; the test
``test_alignment.py::test_templates_place_landmarks`` re-measures the fit on the sample faces.

The facenet row is the mean, over the 8 sample photos, of where ``mtcnn`` 1.0.0 (the MTCNN that
facenet-pytorch also uses) puts its face box relative to dlib's 5-point fit (side = sqrt(width x height)).
facenet-pytorch resizes that box, about 0.67 as wide as tall, to 160x160 without keeping its aspect; a
similarity-aligned chip cannot stretch, so this template is the closest square, not a pixel match.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from advface.assets import dlib_model_path
from advface.errors import AdvfaceError, NoFaceError
from advface.images import check_images, to_uint8


@dataclass(frozen=True)
class Template:
    """An aligned face chip: size in pixels and where the face sits in it (see the module docstring)."""

    name: str
    size: int
    padding: float
    shift: tuple[float, float]
    description: str


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("dlib", 150, 0.25, (0.0, 0.0), "dlib face chip, 150x150, padding 0.25 (dlib-resnet)"),
        Template("vgg", 224, 0.25, (0.0, 0.0), "VGG pose of the AGN eyeglass attack, 224x224"),
        Template("openface", 96, 0.1073, (0.0001, -0.0989), "OpenFace outer-eyes-and-nose pose, 96x96"),
        Template("arcface", 112, 0.3815, (0.0034, 0.1429), "ArcFace 5-point template, 112x112"),
        Template("facenet", 160, 0.1972, (0.0027, 0.0721), "FaceNet MTCNN box as a square, 160x160"),
    )
}


def get_template(name: str | Template) -> Template:
    """Look a template up by name (a :class:`Template` passes through)."""
    if isinstance(name, Template):
        return name
    if name not in TEMPLATES:
        raise AdvfaceError(
            f"Unknown alignment template. Received: template={name!r}. Known: {', '.join(TEMPLATES)}."
        )
    return TEMPLATES[name]


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of its image.

    Attributes:
        box: ``(left, top, right, bottom)`` of the detector's rectangle.
        landmarks: ``(K, 2)`` float array of ``(x, y)`` points, K = 5 or 68 (dlib's point order).
        score: detector confidence (HOG: SVM margin; CNN: MMOD confidence); larger is surer.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray = field(compare=False, repr=False)
    score: float

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(right - left, 0.0) * max(bottom - top, 0.0)


@dataclass(frozen=True)
class AlignedFace:
    """A face with its chip for one template; ``matrix`` maps image ``(x, y, 1)`` to chip ``(x, y)``."""

    face: Face
    chip: np.ndarray = field(compare=False, repr=False)
    template: str
    matrix: np.ndarray = field(compare=False, repr=False)


class FaceAligner:
    """dlib detection (HOG or MMOD CNN), landmarks (5 or 68 points) and face chips.

    Args:
        detector: ``"hog"`` (fast, frontal) or ``"cnn"`` (MMOD, slower, more poses).
        landmarks: 5 (public-domain model, the default) or 68 (iBUG 300-W, non-commercial).
        upsample: how many times to double the image before detection (finds smaller faces).

    Example:
        >>> aligner = FaceAligner()
        >>> faces = aligner.align(load_image("obama.jpg"), template="dlib")
        >>> faces[0].chip.shape
        (150, 150, 3)
    """

    def __init__(self, *, detector: str = "hog", landmarks: int = 5, upsample: int = 1):
        if detector not in ("hog", "cnn"):
            raise AdvfaceError(f"Unknown face detector. Received: detector={detector!r}. Known: hog, cnn.")
        if landmarks not in (5, 68):
            raise AdvfaceError(f"Landmark models have 5 or 68 points. Received: landmarks={landmarks!r}.")
        if not isinstance(upsample, int) or not 0 <= upsample <= 3:
            raise AdvfaceError(f"`upsample` must be an integer in 0..3. Received: upsample={upsample!r}.")
        self.detector = detector
        self.landmarks = landmarks
        self.upsample = upsample

    @functools.cached_property
    def _dlib(self):
        import dlib

        if self.detector == "hog":
            detect = dlib.get_frontal_face_detector()
        else:
            detect = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))
        name = f"shape_predictor_{self.landmarks}_face_landmarks.dat"
        return dlib, detect, dlib.shape_predictor(str(dlib_model_path(name)))

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in one ``(H, W, 3)`` image, largest first; an empty list when there is none."""
        image = check_images(np.asarray(image)[None], name="image")[0]
        dlib, detect, predict = self._dlib
        pixels = to_uint8(image)
        if self.detector == "hog":
            rects, scores, _ = detect.run(pixels, self.upsample, 0.0)
        else:
            found = detect(pixels, self.upsample)
            rects, scores = [d.rect for d in found], [d.confidence for d in found]
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            shape = predict(pixels, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
            faces.append(Face(box=box, landmarks=points, score=float(score)))
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def face_in_box(self, image: np.ndarray, box: tuple[float, float, float, float]) -> Face:
        """Landmarks of the face known to fill ``box`` = ``(left, top, right, bottom)`` pixels of one
        ``(H, W, 3)`` image, without detection (for generated faces, which are centred crops). Its
        ``score`` is NaN: nothing was detected."""
        image = check_images(np.asarray(image)[None], name="image")[0]
        dlib, _, predict = self._dlib
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        points = np.array([(p.x, p.y) for p in predict(to_uint8(image), rect).parts()], dtype=np.float32)
        return Face(box=tuple(float(v) for v in box), landmarks=points, score=float("nan"))

    def _chip_details(self, face: Face, template: Template):
        import dlib  # the geometry only: no need to load the detector and landmark models (a GIL-held 0.2 s)
        points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks])
        box = dlib.rectangle(*(int(round(v)) for v in face.box))
        details = dlib.get_face_chip_details(
            dlib.full_object_detection(box, points), template.size, template.padding
        )
        if template.shift == (0.0, 0.0):
            return details
        rect, angle = details.rect, details.angle
        span = rect.right() - rect.left()
        cos, sin = np.cos(angle), np.sin(angle)
        dx, dy = -template.shift[0] * span, -template.shift[1] * span
        ox, oy = cos * dx - sin * dy, sin * dx + cos * dy
        moved = dlib.drectangle(rect.left() + ox, rect.top() + oy, rect.right() + ox, rect.bottom() + oy)
        return dlib.chip_details(moved, dlib.chip_dims(template.size, template.size), angle)

    def chip_matrix(self, face: Face, template: str | Template = "dlib") -> np.ndarray:
        """The 2x3 similarity mapping image ``(x, y, 1)`` to chip pixel ``(x, y)`` for ``template``.

        This is dlib's mapping for the chip (its corners span pixels 0 .. size-1); use it to place
        landmarks, eyeglasses or marks in a chip, or (inverted) to paste a chip back into the image.
        """
        template = get_template(template)
        return _matrix(self._chip_details(face, template), template.size)

    def chip(self, image: np.ndarray, face: Face, template: str | Template = "dlib") -> np.ndarray:
        """The aligned chip of ``face``: float32 ``(size, size, 3)`` in ``[0, 1]``, cut by dlib."""
        template = get_template(template)
        image = check_images(np.asarray(image)[None], name="image")[0]
        return self._extract(image, self._chip_details(face, template))

    def _extract(self, image: np.ndarray, details) -> np.ndarray:
        dlib = self._dlib[0]
        channels = [dlib.extract_image_chip(np.ascontiguousarray(image[..., c]), details) for c in range(3)]
        return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)

    def align(self, image: np.ndarray, template: str | Template = "dlib") -> list[AlignedFace]:
        """Detect every face in ``image`` and cut its chip; largest face first, ``[]`` if none."""
        template = get_template(template)
        image = check_images(np.asarray(image)[None], name="image")[0]
        aligned = []
        for face in self.detect(image):
            details = self._chip_details(face, template)
            chip = self._extract(image, details)
            aligned.append(AlignedFace(face, chip, template.name, _matrix(details, template.size)))
        return aligned

    def align_one(
        self, image: np.ndarray, template: str | Template = "dlib", *, source: str = "image"
    ) -> AlignedFace:
        """The largest face's chip; raises :class:`NoFaceError` naming ``source`` when there is none."""
        faces = self.align(image, template)
        if not faces:
            raise NoFaceError(
                f"No face found in {source}. Use a photo with a frontal face at least about 80 pixels wide "
                "(or try --detector cnn / --upsample 2)."
            )
        return faces[0]


def _matrix(details, size: int) -> np.ndarray:
    """dlib's image -> chip mapping for ``details``: the rect's corners span chip pixels 0 .. size-1."""
    rect, angle = details.rect, details.angle
    scale = (size - 1) / (rect.right() - rect.left())
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = scale * np.array([[cos, sin], [-sin, cos]])  # inverse rotation, then scale
    offset = (size - 1) / 2 - rotation @ centre
    return np.concatenate([rotation, offset[:, None]], axis=1)


def align_faces(
    images: Sequence[np.ndarray], template: str | Template = "dlib", *, aligner: FaceAligner | None = None
) -> list[list[AlignedFace]]:
    """Align every face of every image: one list per image, largest face first (empty: no face)."""
    aligner = aligner or FaceAligner()
    return [aligner.align(image, template) for image in images]
