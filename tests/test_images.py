"""advface.images on real files written to disk: formats, EXIF, bit depths, damaged files, array checks."""

import cv2
import numpy as np
import pytest
from PIL import Image

from advface.errors import ImageError
from advface.images import check_images, load_image, save_image
from advface.samples import SAMPLE_FILES

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _gradient(height=24, width=32) -> np.ndarray:
    """A uint8 RGB image with distinct, smooth values in each channel."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 % 256, y * 9 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


# 1. Formats, modes and metadata.


def test_jpeg_exif_orientation_is_applied(tmp_path):
    # Stored 32 wide x 16 high, red top-left 8x8 block. Orientation 6: the viewer turns it 90 degrees
    # clockwise, so it shows 16 wide x 32 high with the red block at the top right.
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[...] = BLUE
    stored[:8, :8] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.shape == (32, 16, 3)
    np.testing.assert_allclose(image[3, 12], np.array(RED) / 255, atol=0.1)
    np.testing.assert_allclose(image[3, 3], np.array(BLUE) / 255, atol=0.1)
    np.testing.assert_allclose(image[28, 12], np.array(BLUE) / 255, atol=0.1)


def test_grey_png_becomes_rgb(tmp_path):
    grey = _gradient()[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    image = load_image(tmp_path / "grey.png")
    assert image.shape == (24, 32, 3) and image.dtype == np.float32
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], grey / np.float32(255))


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.concatenate([_gradient(), np.full((24, 32, 1), 7, np.uint8)], axis=-1)
    rgba[:4, :4, 3] = 0  # fully transparent pixels keep their colour: alpha is dropped, not composited
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png")
    assert image.shape == (24, 32, 3)
    np.testing.assert_array_equal(image, _gradient() / np.float32(255))


def test_palette_png(tmp_path):
    indices = (np.arange(24 * 32).reshape(24, 32) % 3).astype(np.uint8)
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    image = load_image(tmp_path / "palette.png")
    colours = np.array([[255, 0, 0], [0, 255, 0], [10, 20, 30]], np.float32) / 255
    np.testing.assert_array_equal(image, colours[indices])


def test_16bit_grey_png_keeps_precision(tmp_path):
    values = np.array([[0, 1000, 1001], [40000, 65534, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    image = load_image(tmp_path / "grey16.png")
    assert image.shape == (2, 3, 3)
    np.testing.assert_allclose(image[0, 1], 1000 / 65535, atol=1e-6)
    np.testing.assert_allclose(image[..., 1], values / 65535, atol=1e-6)


def test_16bit_dark_grey_png_is_not_mistaken_for_8_bit(tmp_path):
    # A dark 16-bit image: every value <= 255 must still be read on the 16-bit scale.
    values = np.array([[0, 100, 255]], np.uint16)
    Image.fromarray(values).save(tmp_path / "dark16.png")
    np.testing.assert_allclose(load_image(tmp_path / "dark16.png")[..., 0], values / 65535, atol=1e-6)


def test_16bit_dark_pgm_is_not_mistaken_for_8_bit(tmp_path):
    values = np.array([[0, 100, 255]], np.uint16)
    Image.fromarray(values).save(tmp_path / "dark16.pgm")
    np.testing.assert_allclose(load_image(tmp_path / "dark16.pgm")[..., 0], values / 65535, atol=1e-6)


def test_16bit_rgb_png_keeps_precision(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1000, 30001, 65535
    rgb[0, 0] = (1, 2, 3)
    assert cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    image = load_image(tmp_path / "rgb16.png")
    assert image.shape == (4, 5, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, rgb / 65535, atol=1e-6)


@pytest.mark.parametrize("suffix, options", [(".webp", {"lossless": True}), (".bmp", {})])
def test_webp_and_bmp_round_trip(tmp_path, suffix, options):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(_gradient()).save(path, **options)
    np.testing.assert_array_equal(load_image(path), _gradient() / np.float32(255))


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg"])
def test_save_then_load(tmp_path, suffix):
    rng = np.random.default_rng(0)
    image = rng.random((20, 30, 3), dtype=np.float32) if suffix != ".jpg" else _gradient() / np.float32(255)
    path = save_image(tmp_path / "sub" / f"saved{suffix}", image)
    assert path.is_file()
    error = np.abs(load_image(path) - image)
    if suffix == ".jpg":  # lossy: only a loose check that it is the same picture
        assert error.mean() < 4 / 255
    else:
        assert error.max() <= 1 / 255


# 2. Files that are not images: ImageError naming the file.


def _raises_naming(path, match):
    with pytest.raises(ImageError, match=match) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    _raises_naming(tmp_path / "empty.jpg", "empty")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture\n")
    _raises_naming(tmp_path / "notes.png", "not an image")


def test_missing_file(tmp_path):
    _raises_naming(tmp_path / "nowhere.jpg", "not found")


def test_directory(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    _raises_naming(tmp_path / "folder.jpg", "directory")


def test_truncated_jpeg(tmp_path, samples):
    data = (samples / "obama.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    _raises_naming(tmp_path / "half.jpg", "damaged or truncated")


# 3. check_images: the array convention.


def test_check_images_refuses_uint8():
    with pytest.raises(ImageError, match="Divide by 255"):
        check_images(np.zeros((1, 8, 8, 3), np.uint8))


def test_check_images_refuses_missing_batch_axis():
    with pytest.raises(ImageError, match=r"Received: images.shape=\(8, 8, 3\)\. Add a batch axis"):
        check_images(np.zeros((8, 8, 3), np.float32))


def test_check_images_refuses_wrong_channels():
    with pytest.raises(ImageError, match=r"Received: images.shape=\(1, 8, 8, 4\)"):
        check_images(np.zeros((1, 8, 8, 4), np.float32))


def test_check_images_refuses_wrong_size():
    with pytest.raises(ImageError, match=r"must be 112x112 .* Received: faces.shape=\(2, 96, 96, 3\)"):
        check_images(np.zeros((2, 96, 96, 3), np.float32), name="faces", size=(112, 112))


def test_check_images_refuses_0_255_floats():
    with pytest.raises(ImageError, match=r"in \[0, 1\]\. Received: values in \[0, 255\]\. Divide by 255"):
        check_images(np.linspace(0, 255, 8 * 8 * 3, dtype=np.float32).reshape(1, 8, 8, 3))


def test_check_images_refuses_nan():
    images = np.zeros((1, 8, 8, 3), np.float32)
    images[0, 1, 2, 0] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        check_images(images)


def test_check_images_clips_tiny_overshoot():
    images = np.full((1, 4, 4, 3), 0.5, np.float64)
    images[0, 0, 0] = 1 + 1e-6
    images[0, 0, 1] = -1e-6
    checked = check_images(images)
    assert checked.dtype == np.float32
    assert checked.max() == 1.0 and checked.min() == 0.0


# 4. The sample photos.


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_samples_load(samples, name):
    image = load_image(samples / name)
    assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_rgba_sample_matches_its_jpeg(samples):
    assert Image.open(samples / "32bit.png").mode == "RGBA"
    rgba, jpeg = load_image(samples / "32bit.png"), load_image(samples / "obama2.jpg")
    assert rgba.shape == jpeg.shape == (1200, 626, 3)
    assert np.abs(rgba - jpeg).mean() < 3 / 255
