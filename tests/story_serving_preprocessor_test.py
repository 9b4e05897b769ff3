import numpy as np
import pytest

from conftest import build_tiny_model
from kstory.data.pipeline import make_dataset
from kstory.export.serving_files import write_serving_files
from kstory.serving import StoryServingPreprocessor

# Tests sharing a module fixture stay on one xdist worker (make test).
pytestmark = pytest.mark.xdist_group("story_serving_preprocessor")


@pytest.fixture(scope="module")
def serving_dir(tiny_preprocessor, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("serving"))
    write_serving_files(build_tiny_model(tiny_preprocessor, compile=False), directory, "onnx")
    return directory


def test_prepare_gives_the_training_pipeline_inputs(
    serving_dir, embedded_stories, tiny_preprocessor
):
    stories = embedded_stories[:3]
    dataset = make_dataset(
        stories,
        tiny_preprocessor,
        image_size=32,
        target_image_size=32,
        window_mode="first",
        batch_size=3,
    )
    expected, _ = next(iter(dataset))
    preprocessor = StoryServingPreprocessor(serving_dir)
    inputs = preprocessor.prepare(
        [list(s.images[:4]) for s in stories], [list(s.texts[:4]) for s in stories]
    )
    assert inputs["images"].dtype == np.uint8 and inputs["token_ids"].dtype == np.int32
    for name in ("images", "token_ids", "padding_mask"):
        np.testing.assert_array_equal(
            inputs[name], np.asarray(expected[name]).astype(inputs[name].dtype)
        )


def test_frames_may_be_paths_bytes_or_arrays_of_any_size(serving_dir, embedded_stories, tmp_path):
    from PIL import Image

    story = embedded_stories[0]
    preprocessor = StoryServingPreprocessor(serving_dir)
    from_bytes = preprocessor.prepare_images(story.images[:2])
    paths = []
    for index, data in enumerate(story.images[:2]):
        path = tmp_path / f"{index}.png"
        path.write_bytes(data)
        paths.append(str(path))
    np.testing.assert_array_equal(preprocessor.prepare_images(paths), from_bytes)
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    np.testing.assert_array_equal(preprocessor.prepare_images(arrays), from_bytes)
    large = preprocessor.prepare_images([np.zeros((90, 120, 3), np.uint8)])
    assert large.shape == (1, 32, 32, 3)


def test_decode_returns_the_text_up_to_sep(serving_dir, tiny_preprocessor):
    tokenizer = tiny_preprocessor.tokenizer
    words = [int(i) for i in np.asarray(tokenizer("the circle moves"))]
    ids = [[tokenizer.cls_token_id, *words, tokenizer.sep_token_id, *words]]
    assert StoryServingPreprocessor(serving_dir).decode(ids) == ["the circle moves"]


def test_wrong_inputs_are_clear_errors(serving_dir, embedded_stories, tmp_path):
    preprocessor = StoryServingPreprocessor(serving_dir)
    story = embedded_stories[0]
    with pytest.raises(ValueError, match="Story 1 has 3 frames and 4 captions"):
        preprocessor.prepare(
            [list(story.images[:4]), list(story.images[:3])], [list(story.texts[:4])] * 2
        )
    with pytest.raises(ValueError, match="list of captions"):
        preprocessor.prepare_texts("one caption")
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        preprocessor.prepare_images([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="is not a kstory export"):
        StoryServingPreprocessor(str(tmp_path))


def test_check_inputs_names_wrong_shapes_and_dtypes(serving_dir, embedded_stories):
    preprocessor = StoryServingPreprocessor(serving_dir)
    story = embedded_stories[0]
    good = preprocessor.prepare(list(story.images[:4]), list(story.texts[:4]))
    steps, size = preprocessor.num_context_steps, preprocessor.image_size
    length = preprocessor.metadata["sequence_length"]
    checked = preprocessor.check_inputs(
        {
            **good,
            "token_ids": good["token_ids"].astype("int64"),
            "padding_mask": good["padding_mask"].astype(bool),
        }
    )
    assert {name: value.dtype.name for name, value in checked.items()} == {
        "images": "uint8",
        "token_ids": "int32",
        "padding_mask": "int32",
    }
    np.testing.assert_array_equal(checked["token_ids"], good["token_ids"])

    images = good["images"]
    cases = [
        (
            {**good, "images": images[:, :3]},
            rf"images must have shape \(batch, {steps}, {size}, {size}, 3\); got \(1, 3,",
        ),
        ({**good, "images": images[..., 0]}, r"images must have shape .* got \(1, 4, "),
        ({**good, "images": images[0]}, r"images must have shape \(batch, .*; got \(4, "),
        (
            {**good, "token_ids": good["token_ids"][..., :-1]},
            rf"token_ids must have shape \(batch, {steps}, {length}\)",
        ),
        (
            {**good, "images": images.astype("int64")},
            r"images must be uint8, 0-255 \(round float frames first\); got int64",
        ),
        ({**good, "images": images / 1.0}, "images must be uint8, 0-255 .*; got float64"),
        (
            {**good, "token_ids": good["token_ids"].astype("float32")},
            "token_ids must be integers; got float32",
        ),
        (
            {**good, "padding_mask": np.full(good["padding_mask"].shape, "x")},
            "padding_mask must be integers or booleans; got <U1",
        ),
        (
            {**good, "padding_mask": np.concatenate([good["padding_mask"]] * 2)},
            "disagree on the batch size",
        ),
        ({"images": images}, r"lack \['padding_mask', 'token_ids'\]"),
        ([images], "must be a dict"),
    ]
    for inputs, message in cases:
        with pytest.raises(ValueError, match=message):
            preprocessor.check_inputs(inputs)
