"""Check, frame by frame, whether worn eyeglasses fool face recognition on a webcam or in a video.

In the physical eyeglass attack (Sharif et al., "A General Framework for Adversarial Examples with
Objectives", 2019) the attacker prints the adversarial frames, wears them and faces a camera. This module
runs the model on that stream: for each checked frame it finds the largest face, cuts the model's chip
(:class:`advface.alignment.FaceAligner`), computes the embedding or logits (:meth:`FaceModel.embed`) and
judges them against the goal with :func:`advface.attacks.base.judge`, the same decision the attacks use.

* :func:`open_stream` reads frames from a webcam index, a video file or a sorted folder of images;
* :func:`iter_checks` yields one :class:`FrameCheck` at a time (for a live view);
* :func:`check_stream` checks a whole stream and returns a :class:`StreamCheck` with a summary.

Example:
    >>> model = load_model("dlib-resnet")
    >>> goal = Dodge(reference_embeddings=model.embed(my_chips))
    >>> result = check_stream("glasses.mp4", model, goal)
    >>> print(result.summary())
    fooled on 37 of 52 frames with a face (71%); no face in 8 frames
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np

from advface.alignment import FaceAligner
from advface.attacks.base import (
    Dodge,
    Impersonate,
    Misclassify,
    TargetClass,
    check_goal,
    goal_threshold,
    judge,
)
from advface.errors import AdvfaceError
from advface.images import list_images, load_image
from advface.progress import Cancelled, ProgressCallback, report

if TYPE_CHECKING:
    from advface.attacks.base import Goal
    from advface.zoo import FaceModel

GOAL_NAMES = {
    Dodge: "dodge",
    Impersonate: "impersonate",
    Misclassify: "misclassify",
    TargetClass: "target-class",
}
"""The name :attr:`StreamCheck.goal` gives each goal type."""

ROW_COLUMNS = ("index", "time_s", "face_found", "fooled", "score", "label", "box")
"""Columns of :meth:`FrameCheck.row`, for a per-frame :class:`advface.runs.ResultsTable`."""

_FOLDER_FPS = 1.0  # frame rate of a folder of images unless `fps` is given


@dataclass(frozen=True)
class FrameCheck:
    """The model's decision on one frame of a stream.

    Attributes:
        index: frame number in the stream (0-based, counting skipped frames too).
        time_s: seconds from the start: the video's timestamp, ``index / fps`` for a folder, wall-clock
            time for a camera.
        face_found: whether a face was detected.
        fooled: the goal is met on this frame (False when there is no face).
        score: distance to the nearest reference/target embedding (``Dodge``, ``Impersonate``) or the
            probability of the goal's class (``Misclassify``, ``TargetClass``); NaN when there is no face.
        label: the predicted class name (classifiers), else None.
        box: ``(left, top, right, bottom)`` of the face in frame pixels, or None.
        chip: the aligned face chip, float32 ``(S, S, 3)`` in ``[0, 1]``; only with ``keep_images=True``.
        image: the frame, float32 ``(H, W, 3)`` in ``[0, 1]``; only with ``keep_images=True``.
        landmarks: ``(K, 2)`` float32 ``(x, y)`` landmarks of the face in frame pixels (K = 5 or 68, the
            aligner's), or None when there is no face.
    """

    index: int
    time_s: float
    face_found: bool
    fooled: bool
    score: float
    label: str | None = None
    box: tuple[float, float, float, float] | None = None
    chip: np.ndarray | None = field(default=None, repr=False, compare=False)
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    landmarks: np.ndarray | None = field(default=None, repr=False, compare=False)

    def row(self) -> dict:
        """The frame as a table row (keys :data:`ROW_COLUMNS`; empty cells for what is missing)."""
        box = "" if self.box is None else ",".join(f"{v:g}" for v in self.box)
        return {
            "index": self.index,
            "time_s": self.time_s,
            "face_found": int(self.face_found),
            "fooled": int(self.fooled),
            "score": self.score,
            "label": self.label or "",
            "box": box,
        }


@dataclass(frozen=True)
class StreamCheck:
    """The decisions on every checked frame of a stream.

    Attributes:
        frames: one :class:`FrameCheck` per checked frame, in stream order.
        source: the camera, video file or folder, as given.
        model: the zoo name of the model.
        goal: ``"dodge"``, ``"impersonate"``, ``"misclassify"`` or ``"target-class"``.
        threshold: the distance threshold used (embedding goals), or the goal's probability requirement
            (classifier goals; None when it has none).
    """

    frames: tuple[FrameCheck, ...]
    source: str
    model: str
    goal: str
    threshold: float | None

    @property
    def frames_with_face(self) -> int:
        return sum(f.face_found for f in self.frames)

    @property
    def frames_fooled(self) -> int:
        return sum(f.fooled for f in self.frames)

    @property
    def fooled_fraction(self) -> float:
        """Fooled frames over frames with a face; NaN when no frame had a face."""
        faces = self.frames_with_face
        return self.frames_fooled / faces if faces else math.nan

    @property
    def no_face_fraction(self) -> float:
        """Frames without a face over frames checked; NaN when no frame was checked."""
        return (len(self.frames) - self.frames_with_face) / len(self.frames) if self.frames else math.nan

    def summary(self) -> str:
        """One line, e.g. ``"fooled on 37 of 52 frames with a face (71%); no face in 8 frames"``."""
        return _summary_line(len(self.frames), self.frames_with_face, self.frames_fooled)


def _summary_line(frames: int, faces: int, fooled: int) -> str:
    if not frames:
        return "no frames checked"
    missing = frames - faces
    if not faces:
        return f"no face in any of the {_count(missing)}"
    line = f"fooled on {fooled} of {_count(faces)} with a face ({fooled / faces:.0%})"
    return line + (f"; no face in {_count(missing)}" if missing else "")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _count(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


class StreamFrame(NamedTuple):
    """One frame of a stream (a named tuple: ``for index, time_s, image in stream``).

    Attributes:
        index: frame number (0-based, counting skipped frames too).
        time_s: seconds from the start of the stream.
        image: float32 RGB ``(H, W, 3)`` in ``[0, 1]``.
    """

    index: int
    time_s: float
    image: np.ndarray


class VideoStream:
    """Frames of a webcam, a video file or a folder of images; made by :func:`open_stream`.

    A context manager and a one-pass iterator of :class:`StreamFrame`. :meth:`close` (or leaving the
    ``with`` block) releases the camera or file.

    Attributes:
        source: the source as text (``"camera 0"``, a path).
        kind: ``"camera"``, ``"video"`` or ``"folder"``.
        total: how many frames the iterator will yield, when known (files and folders), else None.
    """

    def __init__(self, source, *, every: int = 1, fps: float | None = None):
        if not _is_count(every):
            raise AdvfaceError(
                f"`every` must be an integer >= 1. Received: every={every!r}. Use 1 to check every frame."
            )
        if fps is not None and not (isinstance(fps, int | float) and fps > 0):
            raise AdvfaceError(f"`fps` must be a positive number or None. Received: fps={fps!r}.")
        self.every = every
        self._fps = fps
        self._capture = None
        self._paths: list[Path] = []
        self._file_fps: float | None = None
        self._first = False  # a frame was grabbed on opening and not yet returned
        self._start = 0.0
        self._closed = False
        if isinstance(source, str) and source.strip().isdigit():
            source = int(source.strip())
        if isinstance(source, int) and not isinstance(source, bool):
            self._open_camera(source)
        elif isinstance(source, str | Path):
            path = Path(source).expanduser()
            if path.is_dir():
                self._open_folder(path)
            elif not path.exists():
                raise AdvfaceError(
                    f"No such video file: {path}. Received: source={str(source)!r}. Check the path, or give "
                    "a camera index such as 0."
                )
            else:
                self._open_video(path)
        else:
            raise AdvfaceError(
                "Expected a camera index, a video file or a folder of images. "
                f"Received: source={source!r} ({type(source).__name__}). Pass 0 for the first webcam."
            )

    # 1. Opening: each kind fails here, with its own message, rather than in the middle of a run.
    def _open_camera(self, index: int) -> None:
        self.source, self.kind, self.total = f"camera {index}", "camera", None
        hint = "connect a webcam, check that this program may use it, or check a video file instead"
        if index < 0:
            raise AdvfaceError(
                f"Camera indices start at 0. Received: source={index}. Pass 0 for the first webcam."
            )
        self._capture = _quiet_capture(index)
        if not self._capture.isOpened():
            self.close()
            raise AdvfaceError(
                f"Could not open camera {index}. Received: source={index}. Try another index, {hint}."
            )
        if not self._capture.grab():
            self.close()
            raise AdvfaceError(
                f"Camera {index} opened but gave no frame. Received: source={index}. Close other programs "
                f"that use it, {hint}."
            )
        self._first, self._start = True, time.monotonic()

    def _open_video(self, path: Path) -> None:
        self.source, self.kind = str(path), "video"
        self._capture = _quiet_capture(str(path))
        if not self._capture.isOpened() or not self._capture.grab():
            self.close()
            raise AdvfaceError(
                f"OpenCV cannot decode the video file {path}. Received: source={str(path)!r}. Use a video "
                "OpenCV reads (mp4/H.264, avi/MJPG), or a folder of images."
            )
        self._first = True
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = -(-count // self.every) if count > 0 else None
        if self._fps is None and self._capture.get(cv2.CAP_PROP_FPS) > 0:
            self._file_fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        else:
            self._file_fps = self._fps

    def _open_folder(self, path: Path) -> None:
        self.source, self.kind = str(path), "folder"
        self._paths = list_images(path)
        if not self._paths:
            raise AdvfaceError(
                f"No images in the folder {path}. Received: source={str(path)!r}. Put the frames in it as "
                "jpg or png files named in order (frame0001.png ...), or give a video file."
            )
        self.total = -(-len(self._paths) // self.every)

    # 2. Reading: skipped frames are grabbed but not decoded.
    def __iter__(self) -> Iterator[StreamFrame]:
        if self.kind == "folder":
            fps = self._fps or _FOLDER_FPS
            for index in range(0, len(self._paths), self.every):
                if self._closed:
                    return
                yield StreamFrame(index, index / fps, load_image(self._paths[index]))
            return
        index = 0
        while self._capture is not None:
            if self._first:
                self._first = False
            elif not self._capture.grab():
                return
            if index % self.every == 0:
                time_s = self._time(index)
                ok, bgr = self._capture.retrieve()
                if not ok or bgr is None:
                    return
                yield StreamFrame(index, time_s, _to_rgb(bgr))
            index += 1

    def _time(self, index: int) -> float:
        if self.kind == "camera":
            return time.monotonic() - self._start
        if self._fps is None:
            msec = self._capture.get(cv2.CAP_PROP_POS_MSEC)  # the grabbed frame's timestamp
            if msec > 0 or index == 0:
                return msec / 1000.0
        return index / self._file_fps if self._file_fps else 0.0

    def close(self) -> None:
        """Release the camera or file (safe to call twice)."""
        self._closed = True
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoStream({self.source!r}, kind={self.kind!r}, every={self.every})"


def _quiet_capture(source: int | str) -> cv2.VideoCapture:
    """``cv2.VideoCapture(source)`` without OpenCV's own warnings: our error says what went wrong."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(source)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or grey; 8 or 16 bit) as float32 RGB in ``[0, 1]``."""
    scale = 1.0 / (65535.0 if frame.dtype == np.uint16 else 255.0)
    if frame.ndim == 2:
        rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.shape[2] == 4:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return np.multiply(rgb, scale, dtype=np.float32)


def open_stream(source, *, every: int = 1, fps: float | None = None) -> VideoStream:
    """Open a webcam, a video file or a folder of images as a stream of frames.

    Args:
        source: a camera index (``0`` or ``"0"``), a video file OpenCV can decode, or a folder of images
            (read in name order; for reproducible tests and demos).
        every: yield every ``every``-th frame (the others are skipped without decoding).
        fps: frame rate for the frames' times: a folder's (default 1), or one that overrides a video's own
            timestamps. Cameras use the wall clock.

    Returns:
        A :class:`VideoStream`: use it in a ``with`` block and iterate it for
        ``(index, time_s, image)`` with ``image`` float32 RGB ``(H, W, 3)`` in ``[0, 1]``.

    Raises:
        AdvfaceError: a missing file, a file OpenCV cannot decode, an empty folder, or a camera that
            cannot be opened, each with what to do.
    """
    return VideoStream(source, every=every, fps=fps)


class _FrameJudge:
    """Detects, aligns, embeds and judges one frame at a time for one model and goal."""

    def __init__(self, model: FaceModel, goal: Goal, aligner: FaceAligner, keep_images: bool):
        self.model, self.goal, self.aligner, self.keep_images = model, goal, aligner, keep_images

    def __call__(self, index: int, time_s: float, image: np.ndarray) -> FrameCheck:
        keep = image if self.keep_images else None
        faces = self.aligner.detect(image)  # largest first
        if not faces:
            return FrameCheck(index, time_s, face_found=False, fooled=False, score=math.nan, image=keep)
        chip = self.aligner.chip(image, faces[0], self.model.template)
        judgement = judge(self.goal, self.model, self.model.embed(chip[None]))
        label = None
        if judgement.predicted is not None:
            label = self.model.labels[int(judgement.predicted[0])]
        return FrameCheck(
            index,
            time_s,
            face_found=True,
            fooled=bool(judgement.success[0]),
            score=float(judgement.score[0]),
            label=label,
            box=faces[0].box,
            chip=chip if self.keep_images else None,
            image=keep,
            landmarks=faces[0].landmarks,
        )


def _resolve_model(model) -> FaceModel:
    from advface.zoo import FaceModel, load_model

    if isinstance(model, str):
        return load_model(model)
    if not isinstance(model, FaceModel):
        raise AdvfaceError(
            f"Expected a zoo model name or a FaceModel. Received: model={model!r}. Use "
            "advface.zoo.load_model(name), e.g. load_model('dlib-resnet')."
        )
    return model


def _prepare(source, model, goal, *, every, max_frames, fps):
    """Check the arguments and open the stream: every user error is raised before the first frame."""
    model = _resolve_model(model)
    check_goal(goal, model)
    if max_frames is not None and not _is_count(max_frames):
        raise AdvfaceError(
            f"`max_frames` must be an integer >= 1 or None. Received: max_frames={max_frames!r}. Use None "
            "to check the whole stream."
        )
    stream = open_stream(source, every=every, fps=fps)
    total = stream.total if max_frames is None else min(stream.total or max_frames, max_frames)
    return model, stream, total


def _checks(stream, judge_frame, total, max_frames, progress) -> Iterator[FrameCheck]:
    """The one loop behind :func:`iter_checks` and :func:`check_stream`; releases the stream at the end,
    on an error, on :class:`~advface.progress.Cancelled` or when the consumer stops early."""
    with stream:
        fooled = faces = 0
        for step, (index, time_s, image) in enumerate(stream, start=1):
            # 1. Detect the largest face, cut the model's chip, embed, judge.
            check = judge_frame(index, time_s, image)
            faces += check.face_found
            fooled += check.fooled
            # 2. Report (the callback may raise Cancelled, which propagates), then hand the frame over.
            report(
                progress,
                step,
                total,
                "check",
                face_found=check.face_found,
                fooled=check.fooled,
                score=check.score,
                fooled_fraction=fooled / faces if faces else math.nan,
            )
            yield check
            if max_frames is not None and step >= max_frames:
                return


class _Checks:
    """The iterator :func:`iter_checks` returns: :meth:`close` releases the stream even before the first
    frame (closing a generator that never started would not)."""

    def __init__(
        self, checks: Iterator[FrameCheck], stream: VideoStream, model: FaceModel, goal: Goal, max_frames
    ):
        self._checks, self._stream = checks, stream
        self.model, self.goal = model, goal  # the zoo model and the goal each frame is judged against
        self.max_frames = max_frames

    @property
    def stream(self) -> VideoStream:
        """The stream being checked: its ``source`` text, ``kind`` (a camera's stream only ends when the
        camera stops giving frames) and ``total`` (frames to check, when known)."""
        return self._stream

    def __iter__(self) -> _Checks:
        return self

    def __next__(self) -> FrameCheck:
        return next(self._checks)

    def close(self) -> None:
        self._checks.close()
        self._stream.close()

    def __enter__(self) -> _Checks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_checks(
    source,
    model: FaceModel | str,
    goal: Goal,
    *,
    aligner: FaceAligner | None = None,
    every: int = 1,
    max_frames: int | None = None,
    keep_images: bool = False,
    fps: float | None = None,
    progress: ProgressCallback | None = None,
) -> Iterator[FrameCheck]:
    """Check a stream frame by frame, yielding each :class:`FrameCheck` as soon as it is decided.

    For a live view. The arguments are those of :func:`check_stream`; they are checked and the stream is
    opened when this is called, so user errors are raised here, not at the first frame. The stream is
    released when the iterator is exhausted, raises (including :class:`~advface.progress.Cancelled` from
    ``progress``), or is closed: call ``.close()`` or use it in a ``with`` block when stopping early.
    Its ``stream`` attribute is the opened :class:`VideoStream` (``kind``, ``source``, ``total``).

    Example:
        >>> with iter_checks(0, "dlib-resnet", goal) as checks:  # the first webcam, until Stop
        ...     for check in checks:
        ...         show(check.fooled, check.score, check.box)
    """
    model, stream, total = _prepare(source, model, goal, every=every, max_frames=max_frames, fps=fps)
    judge_frame = _FrameJudge(model, goal, aligner or FaceAligner(), keep_images)
    return _Checks(_checks(stream, judge_frame, total, max_frames, progress), stream, model, goal, max_frames)


def check_stream(
    source,
    model: FaceModel | str,
    goal: Goal,
    *,
    aligner: FaceAligner | None = None,
    every: int = 1,
    max_frames: int | None = None,
    keep_images: bool = False,
    fps: float | None = None,
    progress: ProgressCallback | None = None,
) -> StreamCheck:
    """Check whether ``goal`` is met on every ``every``-th frame of a webcam, video or folder of images.

    For each checked frame: detect the largest face, align it to the model's template, embed it and judge
    the output against ``goal`` (:func:`advface.attacks.base.judge`).

    Args:
        source: camera index (``0`` or ``"0"``), video file, or folder of images (see :func:`open_stream`).
        model: a :class:`advface.zoo.FaceModel` or a zoo name.
        goal: ``Dodge`` / ``Impersonate`` (embedding models) or ``Misclassify`` / ``TargetClass``
            (classifiers), checked against ``model`` first.
        aligner: the face detector and aligner (default: HOG, 5 landmarks).
        every: check every ``every``-th frame.
        max_frames: stop after checking this many frames (None: the whole stream; a camera runs until
            ``progress`` raises :class:`~advface.progress.Cancelled`).
        keep_images: keep each frame and face chip in its :class:`FrameCheck` (memory: one frame each).
        fps: frame rate for a folder of images (default 1), or to override a video's timestamps.
        progress: called once per checked frame with stage ``"check"`` and metrics ``face_found``,
            ``fooled``, ``score`` and ``fooled_fraction`` (so far); may raise ``Cancelled``.

    Returns:
        A :class:`StreamCheck`; ``.summary()`` says on how many frames with a face the model was fooled.

    Raises:
        AdvfaceError: an unusable source, model or goal (see :func:`open_stream` and
            :func:`advface.attacks.base.check_goal`).
        Cancelled: raised by ``progress``; the camera or file is released first.
    """
    model, stream, total = _prepare(source, model, goal, every=every, max_frames=max_frames, fps=fps)
    judge_frame = _FrameJudge(model, goal, aligner or FaceAligner(), keep_images)
    frames = tuple(_checks(stream, judge_frame, total, max_frames, progress))
    return StreamCheck(
        frames=frames,
        source=stream.source,
        model=model.name,
        goal=GOAL_NAMES[type(goal)],
        threshold=_threshold(goal, model),
    )


def _threshold(goal: Goal, model: FaceModel) -> float | None:
    """The distance threshold (embedding goals) or the goal's probability requirement (classifiers)."""
    if isinstance(goal, Dodge | Impersonate):
        return goal_threshold(goal, model)
    return None if goal.probability is None else float(goal.probability)


@dataclass(frozen=True)
class CheckRecord:
    """A check of a stream recorded while it ran (:func:`record_checks`); its ``summary.json``.

    Attributes:
        out: the run folder, or None when nothing was written.
        source: the camera or file, as text; kind: ``"camera"``, ``"video"`` or ``"folder"``.
        model, goal, threshold: as in :class:`StreamCheck`.
        frames, frames_with_face, frames_fooled: counts over the frames recorded.
        ended: ``"running"`` (while :func:`record_checks` runs), ``"finished"`` (a video or folder ran
            out, or ``max_frames`` was reached), ``"camera stopped"`` (a camera stopped giving frames,
            e.g. unplugged), ``"stopped"`` (Stop: :class:`~advface.progress.Cancelled`, or Ctrl-C) or
            ``"failed"``.
        seconds: wall time from the first frame.
    """

    out: Path | None
    source: str
    kind: str
    model: str
    goal: str
    threshold: float | None
    frames: int
    frames_with_face: int
    frames_fooled: int
    ended: str
    seconds: float

    @property
    def fooled_fraction(self) -> float:
        """Fooled frames over frames with a face; NaN when no frame had a face."""
        faces = self.frames_with_face
        return self.frames_fooled / faces if faces else math.nan

    def text(self) -> str:
        """One line, as :meth:`StreamCheck.summary` says it."""
        return _summary_line(self.frames, self.frames_with_face, self.frames_fooled)

    def summary(self) -> dict:
        """The ``summary.json`` of the run folder (``fooled_fraction`` is null without a face)."""
        fraction = self.fooled_fraction
        return {
            "frames": self.frames,
            "frames_with_face": self.frames_with_face,
            "frames_fooled": self.frames_fooled,
            "fooled_fraction": None if math.isnan(fraction) else fraction,
            "source": self.source,
            "kind": self.kind,
            "model": self.model,
            "goal": self.goal,
            "threshold": self.threshold,
            "ended": self.ended,
            "seconds": round(self.seconds, 3),
        }


def record_checks(
    checks: _Checks,
    out: str | Path | None = None,
    *,
    command: str = "glasses check",
    arguments: dict | None = None,
    on_frame: Callable[[FrameCheck, CheckRecord], None] | None = None,
) -> CheckRecord:
    """Run the checks of :func:`iter_checks` to their end, recording each frame as soon as it is decided.

    With ``out``, the run folder gets ``config.json`` (``command`` and ``arguments``) first, then one
    ``frames.tsv`` row per frame (:data:`ROW_COLUMNS`), flushed at once, so a killed check keeps every
    frame before the kill, and ``summary.json`` (:meth:`CheckRecord.summary`) however the check ends. A
    new check into the same folder replaces the old rows. The stream is released at the end.

    Args:
        checks: from :func:`iter_checks`.
        out: the run folder, or None to record nothing.
        command, arguments: what ``config.json`` records.
        on_frame: called with each frame and the counts including it (``ended="running"``) before the
            frame is recorded, e.g. to show it; when it raises :class:`~advface.progress.Cancelled` the
            frame is dropped, so the folder holds exactly the frames that were shown.

    Returns:
        The :class:`CheckRecord` (also when stopped: :class:`~advface.progress.Cancelled` is re-raised
        after ``summary.json`` is written; read it there).
    """
    from advface.runs import ResultsTable, write_config, write_text_atomic

    stream, model, goal = checks.stream, checks.model, checks.goal
    out = None if out is None else Path(out)
    start = time.monotonic()

    def record(counts: tuple[int, int, int], ended: str) -> CheckRecord:
        return CheckRecord(
            out=out,
            source=stream.source,
            kind=stream.kind,
            model=model.name,
            goal=GOAL_NAMES[type(goal)],
            threshold=_threshold(goal, model),
            frames=counts[0],
            frames_with_face=counts[1],
            frames_fooled=counts[2],
            ended=ended,
            seconds=time.monotonic() - start,
        )

    counts, ended = (0, 0, 0), "failed"  # frames, with a face, fooled (recorded)
    with checks:
        table = None
        if out is not None:
            write_config(out, command, arguments or {"source": stream.source, "model": model.name})
            (out / "frames.tsv").unlink(missing_ok=True)  # a new check of the stream replaces the old
            (out / "summary.json").unlink(missing_ok=True)
            table = ResultsTable(out / "frames.tsv", ROW_COLUMNS)
        try:
            for check in checks:
                seen = (counts[0] + 1, counts[1] + check.face_found, counts[2] + check.fooled)
                if on_frame is not None:
                    on_frame(check, record(seen, "running"))  # may raise Cancelled: the frame is dropped
                if table is not None:
                    table.add(check.row())
                counts = seen
            limit = checks.max_frames is not None and counts[0] >= checks.max_frames
            ended = "camera stopped" if stream.kind == "camera" and not limit else "finished"
        except (Cancelled, KeyboardInterrupt):
            ended = "stopped"
            raise
        finally:
            result = record(counts, ended)
            if out is not None:
                write_text_atomic(out / "summary.json", json.dumps(result.summary(), indent=2) + "\n")
    return result
