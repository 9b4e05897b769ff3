"""`data.image_resize`: squash, centre crop or pad, the same everywhere."""

import numpy as np
import pytest
from PIL import Image

from conftest import build_tiny_model
from conftest import png_bytes
from conftest import tiny_data_config
from kstory.data.pipeline import RESIZE_MODES
from kstory.data.pipeline import decode_frame
from kstory.data.pipeline import load_frame
from kstory.data.story import Story


def _wide_frame():
    """8 x 16 pixels: four vertical bands, red | green | blue | white."""
    frame = np.zeros((8, 16, 3), np.uint8)
    for band, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]):
        frame[:, 4 * band : 4 * band + 4] = colour
    return frame


def test_crop_keeps_the_centred_square():
    frame = _wide_frame()
    np.testing.assert_array_equal(load_frame(frame, 8, "crop"), frame[:, 4:12])


def test_pad_centres_the_frame_on_black():
    frame = _wide_frame()
    expected = np.zeros((16, 16, 3), np.uint8)
    expected[4:12] = frame
    np.testing.assert_array_equal(load_frame(frame, 16, "pad"), expected)


def test_squash_stretches_the_whole_frame():
    squashed = load_frame(_wide_frame(), 16, "squash")
    # All four bands, each stretched to 4 columns by 16 rows... of a 16-wide frame.
    np.testing.assert_array_equal(squashed[:, 0], np.tile([255, 0, 0], (16, 1)))
    np.testing.assert_array_equal(squashed[:, -1], np.tile([255, 255, 255], (16, 1)))


@pytest.mark.parametrize("resize", RESIZE_MODES)
def test_encoded_and_array_frames_agree(resize):
    frame = _wide_frame()
    decoded = decode_frame(png_bytes(frame), 12, resize).numpy()
    np.testing.assert_array_equal(decoded, load_frame(frame, 12, resize))


def test_an_unknown_mode_names_the_setting():
    with pytest.raises(ValueError, match="data.image_resize must be one of"):
        load_frame(_wide_frame(), 8, "stretch")
    with pytest.raises(ValueError, match="data.image_resize"):
        tiny_data_config(image_resize="stretch")


def test_feature_cache_resizes_as_the_pipeline(tiny_preprocessor, tmp_path):
    from kstory.data.feature_cache import build_feature_cache
    from kstory.data.feature_cache import encoder_fingerprint

    model = build_tiny_model(
        tiny_preprocessor, compile=False, data_overrides={"image_resize": "pad"}
    )
    squash = build_tiny_model(tiny_preprocessor, compile=False)
    assert encoder_fingerprint(model.backbone) != encoder_fingerprint(squash.backbone)
    frame = _wide_frame()
    story = Story("wide", (png_bytes(frame),) * 5, ("a wide frame",) * 5)
    cache = build_feature_cache([story], model.backbone, str(tmp_path))
    np.testing.assert_array_equal(cache.targets[0], load_frame(frame, 32, "pad"))
    with pytest.raises(ValueError, match="resize"):
        cache.check_sizes(32, 32, "squash")


def test_serving_and_storyboards_resize_as_training(tiny_preprocessor, tmp_path):
    from kstory.evaluation.predict import save_prediction
    from kstory.export.serving_files import write_serving_files
    from kstory.serving.story_serving_preprocessor import StoryServingPreprocessor

    model = build_tiny_model(
        tiny_preprocessor, compile=False, data_overrides={"image_resize": "pad"}
    )
    write_serving_files(model, str(tmp_path / "export"), "tf_saved_model")
    served = StoryServingPreprocessor(str(tmp_path / "export"))
    frame = _wide_frame()
    np.testing.assert_array_equal(
        served.prepare_images([png_bytes(frame)])[0], load_frame(frame, 32, "pad")
    )
    story = Story("wide", (png_bytes(frame),) * 5, ("a wide frame",) * 5)
    data = tiny_data_config(image_resize="pad")
    saved = save_prediction(
        story, 0, data, np.zeros((32, 32, 3)), "caption", str(tmp_path / "boards")
    )
    board = np.asarray(Image.open(saved["storyboard_path"]).convert("RGB"))
    # The first panel (160 px, from y=46): padded, its top quarter is black;
    # squashed, it would be red from the top.
    np.testing.assert_array_equal(board[46 + 10, 10 + 5], [0, 0, 0])
    np.testing.assert_array_equal(board[46 + 80, 10 + 5], [255, 0, 0])
