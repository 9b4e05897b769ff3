import io

import numpy as np
from PIL import Image

from kstory.data.image_check import image_problem


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_good_images_of_every_mode_pass(tmp_path):
    for array in (
        np.zeros((4, 4, 3), np.uint8),
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4), np.uint16),
    ):
        assert image_problem(_png(array)) is None
    path = tmp_path / "a.png"
    path.write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
    assert image_problem(str(path)) is None


def test_bad_images_say_why(tmp_path):
    good = _png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert image_problem(b"") == "zero-byte image"
    assert image_problem(None) == "missing image"
    assert image_problem(b"GIF89a nonsense").startswith("undecodable image")
    assert image_problem(good[: len(good) // 2]).startswith("undecodable image")
    assert image_problem(str(tmp_path / "absent.png")).startswith("no file at")


def test_formats_the_pipeline_cannot_decode_are_refused():
    for image_format, readable in (
        ("TIFF", False),
        ("WEBP", True),
        ("BMP", True),
        ("GIF", True),
        ("JPEG", True),
    ):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format=image_format)
        problem = image_problem(buffer.getvalue())
        if readable:
            assert problem is None, image_format
        else:
            assert problem.startswith(f"unsupported image format {image_format}")
