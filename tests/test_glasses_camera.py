"""advface.glasses.camera: checking a video frame by frame with the real dlib model and real faces.

The clip (written with cv2.VideoWriter, MJPG, 5 fps, 640x480) is obama2, biden, a blank grey frame and
obama3, each twice. Against Obama's reference embedding (obama.jpg) the Obama frames stay recognised, the
Biden frames "dodge" (another person is trivially not Obama) and the grey frames have no face.
"""

import math

import cv2
import numpy as np
import pytest

from advface.attacks.base import Dodge, Impersonate, Misclassify
from advface.errors import AdvfaceError
from advface.glasses import camera
from advface.glasses.camera import (
    ROW_COLUMNS,
    FrameCheck,
    StreamCheck,
    check_stream,
    iter_checks,
    open_stream,
)
from advface.images import load_image, save_image
from advface.progress import Cancelled

SIZE = (480, 640)  # (H, W)
FPS = 5.0
SCENES = ("obama2", "biden", None, "obama3")  # None: a blank grey frame
FACE = [True, True, True, True, False, False, True, True]
BIDEN = [False, False, True, True, False, False, False, False]
OBAMA = [True, True, False, False, False, False, True, True]


def _letterbox(image: np.ndarray) -> np.ndarray:
    """Resize to fit SIZE, keeping the aspect, and pad with grey."""
    h, w = SIZE
    scale = min(h / image.shape[0], w / image.shape[1])
    nh, nw = round(image.shape[0] * scale), round(image.shape[1] * scale)
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), 0.5, np.float32)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory, samples):
    """The clip as an MJPG .avi and as a folder of PNG frames (the video's decoded frames)."""
    folder = tmp_path_factory.mktemp("clip")
    frames = []
    for name in SCENES:
        image = np.full((*SIZE, 3), 0.5, np.float32) if name is None else load_image(samples / f"{name}.jpg")
        frames += [_letterbox(image)] * 2
    video = folder / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE[::-1])
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(np.round(frame * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    pngs = folder / "frames"
    with open_stream(video) as stream:
        for index, _, image in stream:
            save_image(pngs / f"frame{index:03d}.png", image)
    return video, pngs


@pytest.fixture(scope="module")
def model():
    from advface.zoo import load_model

    return load_model("dlib-resnet")


@pytest.fixture(scope="module")
def embeddings(model, samples, aligner):
    """dlib-resnet embeddings of obama.jpg and biden.jpg, (1, 128) each."""
    return {
        name: model.embed(aligner.align_one(load_image(samples / f"{name}.jpg"), model.template).chip[None])
        for name in ("obama", "biden")
    }


@pytest.fixture(scope="module")
def dodge(clip, model, embeddings, aligner):
    """check_stream of the video against Dodge(obama), with the progress it reported."""
    calls = []
    result = check_stream(
        clip[0],
        model,
        Dodge(reference_embeddings=embeddings["obama"]),
        aligner=aligner,
        progress=calls.append,
    )
    return result, calls


def test_open_stream_reads_every_frame(clip):
    with open_stream(clip[0]) as stream:
        frames = list(stream)
        assert stream.kind == "video" and stream.total == 8
    assert [f.index for f in frames] == list(range(8))
    assert [f.time_s for f in frames] == pytest.approx([i / FPS for i in range(8)])
    for _, _, image in frames:
        assert image.shape == (*SIZE, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
    assert abs(float(frames[4].image.mean()) - 0.5) < 0.01  # the grey frame, RGB in [0, 1]


def test_dodge_on_the_clip(dodge):
    result, _ = dodge
    assert [f.face_found for f in result.frames] == FACE
    assert [f.fooled for f in result.frames] == BIDEN  # only Biden's frames are not Obama
    assert [f.index for f in result.frames] == list(range(8))
    assert [f.time_s for f in result.frames] == pytest.approx([i / FPS for i in range(8)])
    for frame, obama, face in zip(result.frames, OBAMA, FACE, strict=True):
        if not face:
            assert math.isnan(frame.score) and frame.box is None
        elif obama:
            assert frame.score < 0.6
        else:
            assert frame.score > 0.6
        if face:
            left, top, right, bottom = frame.box
            assert 0 <= left < right <= SIZE[1] and 0 <= top < bottom <= SIZE[0]
        assert frame.label is None and frame.chip is None and frame.image is None
    assert (result.model, result.goal, result.threshold) == ("dlib-resnet", "dodge", 0.6)
    assert result.source.endswith("clip.avi")
    assert (result.frames_with_face, result.frames_fooled) == (6, 2)
    assert result.fooled_fraction == pytest.approx(2 / 6)
    assert result.no_face_fraction == pytest.approx(2 / 8)
    assert result.summary() == "fooled on 2 of 6 frames with a face (33%); no face in 2 frames"


def test_progress_once_per_checked_frame(dodge):
    result, calls = dodge
    assert [p.step for p in calls] == list(range(1, 9))
    assert {p.total for p in calls} == {8} and {p.stage for p in calls} == {"check"}
    assert [p.metrics["fooled"] for p in calls] == BIDEN
    assert calls[-1].metrics["fooled_fraction"] == pytest.approx(2 / 6)
    assert calls[0].metrics["score"] == pytest.approx(result.frames[0].score)


def test_impersonate_flips_the_decision(clip, model, embeddings, aligner, dodge):
    # Impersonating Obama succeeds exactly where dodging him fails, at the same distances.
    result = check_stream(clip[0], model, Impersonate(target_embeddings=embeddings["obama"]), aligner=aligner)
    assert [f.fooled for f in result.frames] == OBAMA
    assert [f.score for f in result.frames] == pytest.approx([f.score for f in dodge[0].frames], nan_ok=True)
    assert result.goal == "impersonate"
    assert result.summary() == "fooled on 4 of 6 frames with a face (67%); no face in 2 frames"
    # Impersonating Biden succeeds on his frames only, now within the threshold of the target.
    biden = check_stream(
        clip[0], model, Impersonate(target_embeddings=embeddings["biden"]), aligner=aligner, max_frames=4
    )
    assert [f.fooled for f in biden.frames] == BIDEN[:4]
    assert [f.score < 0.6 for f in biden.frames] == BIDEN[:4]


def test_folder_of_images_gives_the_same_result(clip, model, embeddings, aligner, dodge):
    result = check_stream(clip[1], model, Dodge(embeddings["obama"]), aligner=aligner, fps=FPS)
    video = dodge[0]
    assert [(f.index, f.face_found, f.fooled) for f in result.frames] == [
        (f.index, f.face_found, f.fooled) for f in video.frames
    ]
    assert [f.time_s for f in result.frames] == pytest.approx([f.time_s for f in video.frames])
    assert [f.score for f in result.frames] == pytest.approx([f.score for f in video.frames], nan_ok=True)
    assert result.summary() == video.summary()


def test_iter_checks_is_the_same_path_and_keeps_images(clip, model, embeddings, aligner, dodge):
    checks = iter_checks(
        clip[0], model, Dodge(embeddings["obama"]), aligner=aligner, every=2, keep_images=True
    )
    frames = list(checks)
    assert frames == [f for f in dodge[0].frames if f.index % 2 == 0]  # arrays are not compared
    for frame in frames:
        assert frame.image.shape == (*SIZE, 3)
        if frame.face_found:
            assert frame.chip.shape == (150, 150, 3) and frame.chip.dtype == np.float32
        else:
            assert frame.chip is None
    assert "chip" not in repr(frames[0]) and "image" not in repr(frames[0])


def test_every_and_max_frames(clip, model, embeddings, aligner):
    calls = []
    result = check_stream(
        clip[0], "dlib-resnet", Dodge(embeddings["obama"]), aligner=aligner, every=3, progress=calls.append
    )
    assert [f.index for f in result.frames] == [0, 3, 6]
    assert [f.time_s for f in result.frames] == pytest.approx([0.0, 0.6, 1.2])
    assert [f.fooled for f in result.frames] == [False, True, False]
    assert [(p.step, p.total) for p in calls] == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    result = check_stream(
        clip[0],
        model,
        Dodge(embeddings["obama"]),
        aligner=aligner,
        every=2,
        max_frames=2,
        progress=calls.append,
    )
    assert [f.index for f in result.frames] == [0, 2]
    assert [(p.step, p.total) for p in calls] == [(1, 2), (2, 2)]


@pytest.fixture()
def releases(monkeypatch):
    """Counts VideoCapture.release calls (the real capture, spied on)."""
    counted = []

    class Spy:  # a proxy, not a subclass: Python subclasses of cv2.VideoCapture crash the garbage collector
        def __init__(self, capture):
            self._capture = capture

        def __getattr__(self, name):
            return getattr(self._capture, name)

        def release(self):
            counted.append(1)
            self._capture.release()

    real = camera._quiet_capture
    monkeypatch.setattr(camera, "_quiet_capture", lambda source: Spy(real(source)))
    return counted


def test_cancel_stops_and_releases(clip, model, embeddings, aligner, releases):
    steps = []

    def cancel_at_second(progress):
        steps.append(progress.step)
        if progress.step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        check_stream(clip[0], model, Dodge(embeddings["obama"]), aligner=aligner, progress=cancel_at_second)
    assert steps == [1, 2] and releases == [1]
    # A live view that stops early releases the capture when it closes the iterator.
    checks = iter_checks(clip[0], model, Dodge(embeddings["obama"]), aligner=aligner)
    assert next(checks).index == 0 and releases == [1]
    checks.close()
    assert releases == [1, 1]
    with iter_checks(clip[0], model, Dodge(embeddings["obama"]), aligner=aligner):
        pass  # never started
    assert releases == [1, 1, 1]


def test_a_wrong_goal_fails_before_opening(clip, model, releases):
    with pytest.raises(AdvfaceError, match="needs a classifier"):
        check_stream(clip[0], model, Misclassify(label=0))
    assert releases == []


def test_source_errors(tmp_path):
    with pytest.raises(AdvfaceError, match=r"No such video file: .*missing\.avi\. Received: source="):
        open_stream(tmp_path / "missing.avi")
    garbage = tmp_path / "x.avi"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AdvfaceError, match=r"OpenCV cannot decode the video file .*x\.avi\. Received: "):
        open_stream(garbage)
    for index in (99, "99"):
        with pytest.raises(
            AdvfaceError, match=r"Could not open camera 99\. Received: source=99\. .*a video file instead"
        ):
            open_stream(index)
    with pytest.raises(AdvfaceError, match="Camera indices start at 0. Received: source=-1"):
        open_stream(-1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdvfaceError, match="No images in the folder .*empty"):
        open_stream(tmp_path / "empty")
    with pytest.raises(AdvfaceError, match="Expected a camera index, a video file or a folder of images"):
        open_stream(1.5)


def test_argument_errors(clip, model, embeddings):
    goal = Dodge(embeddings["obama"])
    with pytest.raises(AdvfaceError, match=r"`every` must be an integer >= 1\. Received: every=0"):
        check_stream(clip[0], model, goal, every=0)
    with pytest.raises(
        AdvfaceError, match=r"`max_frames` must be an integer >= 1 or None\. Received: max_frames=0"
    ):
        check_stream(clip[0], model, goal, max_frames=0)
    with pytest.raises(AdvfaceError, match=r"`fps` must be a positive number or None\. Received: fps=0"):
        check_stream(clip[1], model, goal, fps=0)
    with pytest.raises(AdvfaceError, match="Expected a zoo model name or a FaceModel"):
        check_stream(clip[0], object(), goal)


def _frame(index, face, fooled=False):
    return FrameCheck(
        index, index / 5, face, fooled, 0.7 if face else math.nan, box=(0, 0, 1, 1) if face else None
    )


@pytest.mark.parametrize(
    ("frames", "text", "fooled", "no_face"),
    [
        ((), "no frames checked", math.nan, math.nan),
        ((_frame(0, False), _frame(1, False)), "no face in any of the 2 frames", math.nan, 1.0),
        ((_frame(0, True, True),), "fooled on 1 of 1 frame with a face (100%)", 1.0, 0.0),
        (
            (_frame(0, True, True), _frame(1, True), _frame(2, True), _frame(3, False)),
            "fooled on 1 of 3 frames with a face (33%); no face in 1 frame",
            1 / 3,
            0.25,
        ),
    ],
)
def test_summary_text(frames, text, fooled, no_face):
    result = StreamCheck(frames=frames, source="camera 0", model="dlib-resnet", goal="dodge", threshold=0.6)
    assert result.summary() == text
    assert result.fooled_fraction == pytest.approx(fooled, nan_ok=True)
    assert result.no_face_fraction == pytest.approx(no_face, nan_ok=True)


def test_rows_for_a_results_table(tmp_path):
    from advface.runs import ResultsTable

    table = ResultsTable(tmp_path / "results.tsv", ROW_COLUMNS)
    table.add(_frame(0, True, True).row())
    table.add(_frame(1, False).row())
    assert table.rows() == [
        {
            "index": "0",
            "time_s": "0",
            "face_found": "1",
            "fooled": "1",
            "score": "0.7",
            "label": "",
            "box": "0,0,1,1",
        },
        {
            "index": "1",
            "time_s": "0.2",
            "face_found": "0",
            "fooled": "0",
            "score": "nan",
            "label": "",
            "box": "",
        },
    ]


def test_frames_carry_the_face_landmarks(clip, model, embeddings, aligner, dodge):
    for frame in dodge[0].frames:
        if not frame.face_found:
            assert frame.landmarks is None
            continue
        assert frame.landmarks.shape == (5, 2) and frame.landmarks.dtype == np.float32
        left, top, right, bottom = frame.box
        margin = 0.25 * (right - left)
        x, y = frame.landmarks.T
        assert np.all((x > left - margin) & (x < right + margin) & (y > top - margin) & (y < bottom + margin))
    assert "landmarks" not in repr(dodge[0].frames[0])
    assert "landmarks" not in dodge[0].frames[0].row()


def test_iter_checks_exposes_its_stream(clip, model, embeddings, aligner, releases):
    with iter_checks(clip[0], model, Dodge(embeddings["obama"]), aligner=aligner) as checks:
        stream = checks.stream
        assert (stream.kind, stream.source, stream.total) == ("video", str(clip[0]), len(FACE))
    assert releases == [1]


def test_record_checks_writes_each_frame_as_decided_and_agrees_with_check_stream(
    clip, model, embeddings, aligner, dodge, tmp_path
):
    import json

    from advface.glasses.camera import record_checks
    from advface.runs import ResultsTable

    expected, _ = dodge
    out = tmp_path / "run"
    rows_when_shown = []

    def on_frame(check, so_far):  # before the frame is recorded: the rows so far exclude it
        rows_when_shown.append((len(ResultsTable(out / "frames.tsv", camera.ROW_COLUMNS).rows()), so_far))

    goal = Dodge(reference_embeddings=embeddings["obama"])
    record = record_checks(iter_checks(clip[0], model, goal, aligner=aligner), out, on_frame=on_frame)
    assert [n for n, _ in rows_when_shown] == list(range(len(expected.frames)))
    assert [s.frames for _, s in rows_when_shown] == list(range(1, len(expected.frames) + 1))
    assert {s.ended for _, s in rows_when_shown} == {"running"}
    assert record.ended == "finished" and record.kind == "video"
    assert (record.frames, record.frames_with_face, record.frames_fooled) == (
        len(expected.frames),
        expected.frames_with_face,
        expected.frames_fooled,
    )
    assert record.text() == expected.summary()
    rows = ResultsTable(out / "frames.tsv", camera.ROW_COLUMNS).rows()
    assert [int(r["fooled"]) for r in rows] == [int(f.fooled) for f in expected.frames]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == record.summary() and summary["goal"] == "dodge" and summary["threshold"] == 0.6
    assert json.loads((out / "config.json").read_text())["command"] == "glasses check"


def test_record_checks_keeps_the_frames_before_a_stop(clip, model, embeddings, aligner, tmp_path, releases):
    import json

    from advface.glasses.camera import record_checks
    from advface.progress import Cancelled

    def stop_at_third(check, so_far):
        if so_far.frames == 3:
            raise Cancelled("stopped by the user")

    goal = Dodge(reference_embeddings=embeddings["obama"])
    with pytest.raises(Cancelled):
        record_checks(iter_checks(clip[0], model, goal, aligner=aligner), tmp_path, on_frame=stop_at_third)
    assert (tmp_path / "frames.tsv").read_text().count("\n") == 1 + 2  # header and the two frames shown
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ended"] == "stopped" and summary["frames"] == 2
    assert releases == [1]
    # A second check into the same folder replaces the first one's rows.
    again = record_checks(iter_checks(clip[0], model, goal, aligner=aligner, max_frames=1), tmp_path)
    assert again.ended == "finished" and (tmp_path / "frames.tsv").read_text().count("\n") == 2
