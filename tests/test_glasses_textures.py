"""advface.glasses.textures: procedural eyeglass frames, written to and read from real files on disk."""

import time

import numpy as np
import pytest
from PIL import Image

from advface.errors import AdvfaceError
from advface.glasses.geometry import canvas_mask, crop_canvas, eyeglass_mask, frame_distance
from advface.glasses.textures import (
    CHUNK,
    MASK_NAME,
    STYLES,
    EyeglassSet,
    load_eyeglasses,
    render_eyeglasses,
    write_eyeglasses,
)
from advface.progress import Cancelled


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return render_eyeglasses(64, seed=0)


def _covered(images: np.ndarray) -> np.ndarray:
    """``(N, 64, 176)`` True where a frame was painted."""
    return images.max(axis=-1) > 0


# 1. Rendering.


def test_shape_dtype_range_and_black_off_the_default_mask(frames):
    assert frames.shape == (64, 64, 176, 3)
    assert frames.dtype == np.float32
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    assert np.all(frames[:, canvas_mask() == 0] == 0.0)
    assert _covered(frames).sum((1, 2)).min() > 500  # every image has a frame


def test_rim_thickness_varies_between_samples(frames):
    coverage = _covered(frames).sum((1, 2))
    assert coverage.max() > 1.5 * coverage.min()
    thin = _covered(render_eyeglasses(8, thickness=(3.5, 3.5))).sum((1, 2))
    thick = _covered(render_eyeglasses(8, thickness=(7.5, 7.5))).sum((1, 2))
    assert thick.min() > thin.max()
    # A rim of a given thickness stays inside that thickness's mask.
    assert np.all(_covered(render_eyeglasses(8, thickness=(4.0, 4.0)))[:, canvas_mask(4.0) == 0] == 0)


def test_every_style_renders_and_the_styles_differ():
    distance = crop_canvas(frame_distance())
    rows = np.arange(distance.shape[0])[:, None]
    core = distance < 1.0  # along the centre line, where the bevel shading is nearly constant
    lower, top = core & (rows > 35), core & (rows < 18)
    mottle, split = {}, {}
    for style in STYLES:
        images = render_eyeglasses(32, seed=5, styles=style)
        assert _covered(images).sum((1, 2)).min() > 500, style
        mottle[style] = np.median([image[lower].std(0).mean() for image in images])
        split[style] = np.median([np.abs(i[top].mean(0) - i[lower].mean(0)).mean() for i in images])
    # Mottled and patterned frames vary along the rim far more than plain ones; two-tone and gradient
    # frames differ more between the top bar and the lower rims than solid ones (where only light does).
    assert mottle["tortoiseshell"] > 1.8 * mottle["solid"]
    assert mottle["patterned"] > 1.8 * mottle["solid"]
    assert split["two-tone"] > 1.2 * split["solid"]
    assert split["gradient"] > 1.1 * split["solid"]


def test_deterministic_per_seed_and_independent_of_how_many_are_rendered():
    first = render_eyeglasses(CHUNK + 4, seed=7)
    np.testing.assert_array_equal(first, render_eyeglasses(CHUNK + 4, seed=7))
    np.testing.assert_array_equal(first[:5], render_eyeglasses(5, seed=7))
    assert np.abs(first - render_eyeglasses(CHUNK + 4, seed=8)).mean() > 0.01
    assert render_eyeglasses(0).shape == (0, 64, 176, 3)


def test_bad_arguments_say_what_was_received():
    with pytest.raises(AdvfaceError, match="Received: styles=\\('plaid',\\)"):
        render_eyeglasses(2, styles=["plaid"])
    with pytest.raises(AdvfaceError, match="Received: thickness=\\(3.5, 9.0\\)"):
        render_eyeglasses(2, thickness=(3.5, 9.0))
    with pytest.raises(AdvfaceError, match="Received: n=-1"):
        render_eyeglasses(-1)


def test_renders_a_thousand_canvases_quickly():
    render_eyeglasses(1)
    start = time.perf_counter()
    render_eyeglasses(1000, seed=1)
    assert time.perf_counter() - start < 5.0


def test_preview_grid(artifacts):
    images = render_eyeglasses(24, seed=0)
    grid = images.reshape(6, 4, 64, 176, 3).transpose(0, 2, 1, 3, 4).reshape(6 * 64, 4 * 176, 3)
    preview = Image.fromarray(np.round(grid * 255).astype(np.uint8))
    preview.resize((preview.width * 2, preview.height * 2), Image.NEAREST).save(
        artifacts / "eyeglass_textures.png"
    )


# 2. The AGN dataset layout on disk.


def test_write_load_round_trip_and_resume(tmp_path):
    n = CHUNK + 6
    events = []
    paths = write_eyeglasses(tmp_path, n, seed=3, progress=events.append)
    assert paths == [tmp_path / f"glasses{i:06d}.png" for i in range(n)]
    assert [(e.step, e.total, e.stage) for e in events] == [(1, 2, "eyeglasses"), (2, 2, "eyeglasses")]
    with Image.open(paths[0]) as image:
        assert (image.size, image.mode) == ((224, 224), "RGB")
    mask = np.asarray(Image.open(tmp_path / MASK_NAME).convert("L")) / 255.0
    np.testing.assert_array_equal(mask, eyeglass_mask())

    glasses = load_eyeglasses(tmp_path)
    assert isinstance(glasses, EyeglassSet) and glasses.skipped == ()
    assert glasses.paths == tuple(paths)  # the mask is not a training image
    assert glasses.images.shape == (n, 64, 176, 3) and glasses.images.dtype == np.float32
    np.testing.assert_allclose(glasses.images, render_eyeglasses(n, seed=3), atol=1 / 255)

    # Resume after losing files, and after a run cancelled in its first chunk.
    written = {p.name: p.read_bytes() for p in paths}
    for i in (0, 5, CHUNK + 1, n - 1):
        paths[i].unlink()
    (tmp_path / "glasses000005.png.tmp").write_bytes(b"half a file")

    def cancel(event):
        raise Cancelled

    with pytest.raises(Cancelled):
        write_eyeglasses(tmp_path, n, seed=3, progress=cancel)
    assert paths[0].is_file() and not paths[n - 1].is_file()
    assert write_eyeglasses(tmp_path, n, seed=3) == paths
    assert {p.name: p.read_bytes() for p in paths} == written
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted([*written, MASK_NAME])


def test_bad_files_are_skipped_and_reported(tmp_path):
    write_eyeglasses(tmp_path, 4, seed=1)
    good = (tmp_path / "glasses000000.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.png").write_bytes(b"this is not a png")
    Image.new("RGB", (100, 100), (200, 10, 10)).save(tmp_path / "small.jpg")
    canvas = np.round(render_eyeglasses(1, seed=9)[0] * 255).astype(np.uint8)
    Image.fromarray(canvas).save(tmp_path / "canvas.png")  # already cropped: used as is
    (tmp_path / "notes.txt").write_text("not an image")

    glasses = load_eyeglasses(tmp_path)
    assert [p.name for p in glasses.paths] == ["canvas.png", *(f"glasses{i:06d}.png" for i in range(4))]
    np.testing.assert_array_equal(glasses.images[0], canvas / np.float32(255))
    reasons = {path.name: reason for path, reason in glasses.skipped}
    assert set(reasons) == {"garbage.png", "small.jpg", "truncated.png"}
    assert "not an image" in reasons["garbage.png"]
    assert "damaged or truncated" in reasons["truncated.png"]
    assert "Received: size=100x100" in reasons["small.jpg"]


def test_limit_takes_a_seeded_subset(tmp_path):
    write_eyeglasses(tmp_path, 12, seed=2)
    (tmp_path / "garbage.png").write_bytes(b"not a png")
    subset = load_eyeglasses(tmp_path, limit=5, seed=1)
    assert len(subset) == 5 and list(subset.paths) == sorted(subset.paths)
    assert load_eyeglasses(tmp_path, limit=5, seed=1).paths == subset.paths
    assert load_eyeglasses(tmp_path, limit=5, seed=2).paths != subset.paths
    assert len(load_eyeglasses(tmp_path, limit=100)) == 12
    with pytest.raises(AdvfaceError, match="Received: limit=0"):
        load_eyeglasses(tmp_path, limit=0)


def test_missing_or_empty_folder_says_how_to_make_data(tmp_path):
    hint = "advface glasses data --out DIR"
    with pytest.raises(AdvfaceError, match=hint):
        load_eyeglasses(tmp_path / "absent")
    with pytest.raises(AdvfaceError, match=hint):
        load_eyeglasses(tmp_path)
    Image.fromarray(np.zeros((224, 224, 3), np.uint8)).save(tmp_path / "eyeglasses_mask.png")
    (tmp_path / "broken.png").write_bytes(b"")
    with pytest.raises(AdvfaceError, match="Received: 1 image files, 1 unreadable") as error:
        load_eyeglasses(tmp_path)
    assert "\n" not in str(error.value) and hint in str(error.value)
