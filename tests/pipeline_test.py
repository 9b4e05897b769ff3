import io

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import story_row
from kstory.data.parquet_shards import write_shards
from kstory.data.pipeline import make_dataset
from kstory.data.pipeline import make_train_stream
from kstory.data.story import Story
from kstory.data.story_reasoning_reader import read_story_reasoning
from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.data.tokenizer_loading import load_tokenizer

# Tests sharing a module fixture stay on one xdist worker (make test). The
# pipeline is tf.data under every Keras backend, so `make test` runs these
# once; pipeline_fit_test.py feeds it to `fit` on each backend.
pytestmark = [pytest.mark.xdist_group("pipeline"), pytest.mark.single_backend]


@pytest.fixture(scope="module")
def valued_stories(tmp_path_factory):
    """Stories whose frame i is filled with 10*i and says `Ann waves i+1.`"""
    directory = str(tmp_path_factory.mktemp("valued"))
    write_shards([story_row(str(i), 5 + i) for i in range(4)], directory, "train")
    return read_story_reasoning(directory, "train")[0]


@pytest.fixture(scope="module")
def valued_preprocessor(valued_stories):
    texts = [text for story in valued_stories for text in story.texts]
    return StoryTextPreprocessor(load_tokenizer("learned", texts, 100), 8, 8)


def test_shapes_and_dtypes(embedded_stories, learned_tokenizer):
    preprocessor = StoryTextPreprocessor(learned_tokenizer, 48, 40)
    dataset = make_dataset(
        embedded_stories, preprocessor, image_size=24, target_image_size=16, batch_size=3
    )
    inputs, targets = next(iter(dataset))
    assert inputs["images"].shape == (3, 4, 24, 24, 3) and inputs["images"].dtype.name == "uint8"
    assert inputs["token_ids"].shape == (3, 4, 48) and inputs["token_ids"].dtype.name == "int32"
    assert (
        inputs["padding_mask"].shape == (3, 4, 48) and inputs["padding_mask"].dtype.name == "int32"
    )
    assert inputs["decoder_token_ids"].shape == (3, 40)
    assert (
        targets["next_image"].shape == (3, 16, 16, 3)
        and targets["next_image"].dtype.name == "float32"
    )
    assert targets["next_token_ids"].shape == (3, 40)
    next_image = targets["next_image"].numpy()
    assert 0 <= next_image.min() and next_image.max() <= 1 and next_image.max() > 0.2
    np.testing.assert_array_equal(
        inputs["decoder_token_ids"].numpy()[:, 1:], targets["next_token_ids"].numpy()[:, :-1]
    )


def test_every_sample_is_aligned_context_then_next_frame(valued_stories, valued_preprocessor):
    dataset = make_dataset(
        valued_stories,
        valued_preprocessor,
        image_size=8,
        target_image_size=8,
        batch_size=4,
        shuffle=True,
        seed=3,
    )
    tokenizer = valued_preprocessor.tokenizer
    count = 0
    for inputs, targets in dataset:
        for images, next_image, next_ids in zip(
            inputs["images"].numpy(),
            targets["next_image"].numpy(),
            targets["next_token_ids"].numpy(),
        ):
            first = int(images[0, 0, 0, 0]) // 10
            assert [int(image[0, 0, 0]) for image in images] == [10 * (first + k) for k in range(4)]
            np.testing.assert_allclose(next_image, 10 * (first + 4) / 255, atol=1e-6)
            words = tokenizer.detokenize(next_ids[next_ids > 3])
            assert words == f"ann waves {first + 5} ."
            count += 1
    assert count == sum(story.num_frames - 4 for story in valued_stories)


def test_same_seed_same_order_and_reshuffled_each_epoch(valued_stories, valued_preprocessor):
    def first_values(dataset):
        return [int(v) for inputs, _ in dataset for v in inputs["images"].numpy()[:, 0, 0, 0, 0]]

    kwargs = dict(image_size=8, target_image_size=8, batch_size=2, shuffle=True, seed=5)
    dataset = make_dataset(valued_stories, valued_preprocessor, **kwargs)
    epoch_1, epoch_2 = first_values(dataset), first_values(dataset)
    again = first_values(make_dataset(valued_stories, valued_preprocessor, **kwargs))
    assert epoch_1 == again
    assert sorted(epoch_1) == sorted(epoch_2)
    unshuffled = first_values(
        make_dataset(
            valued_stories, valued_preprocessor, image_size=8, target_image_size=8, batch_size=2
        )
    )
    assert epoch_1 != unshuffled


def test_first_mode_uses_one_window_per_story(valued_stories, valued_preprocessor):
    dataset = make_dataset(
        valued_stories,
        valued_preprocessor,
        image_size=8,
        target_image_size=8,
        batch_size=50,
        window_mode="first",
    )
    inputs, _ = next(iter(dataset))
    assert inputs["images"].shape[0] == len(valued_stories)
    assert (inputs["images"].numpy()[:, 0, 0, 0, 0] == 0).all()


def _encoded(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_grey_rgba_and_16_bit_images_become_rgb(valued_preprocessor, tmp_path):
    grey = _encoded(np.full((6, 6), 200, np.uint8))
    rgba = _encoded(np.full((6, 6, 4), 200, np.uint8))
    deep = _encoded(np.full((6, 6), 200 * 257, np.uint16))
    jpeg = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), 200, np.uint8)).save(jpeg, format="JPEG")
    path = tmp_path / "frame.png"
    path.write_bytes(grey)
    story = Story(
        "mixed", (grey, rgba, deep, jpeg.getvalue(), str(path)), ("a", "b", "c", "d", "e")
    )
    inputs, targets = next(
        iter(make_dataset([story], valued_preprocessor, image_size=4, target_image_size=4))
    )
    assert inputs["images"].shape == (1, 4, 4, 4, 3)
    np.testing.assert_allclose(inputs["images"].numpy().astype(int), 200, atol=2)
    np.testing.assert_allclose(targets["next_image"].numpy(), 200 / 255, atol=1e-5)


def test_stories_too_short_for_a_window_are_a_clear_error(valued_preprocessor):
    short = Story("s", (b"x",) * 4, ("a",) * 4)
    with pytest.raises(ValueError, match="No 5-frame window"):
        make_dataset([short], valued_preprocessor)


@pytest.mark.parametrize("stream", [False, True])
def test_shards_together_read_the_global_batches(embedded_stories, learned_tokenizer, stream):
    preprocessor = StoryTextPreprocessor(learned_tokenizer, 48, 48)
    options = dict(image_size=16, target_image_size=8, batch_size=4, seed=3)
    if stream:
        build, options = make_train_stream, dict(options, epochs=1)
    else:
        build, options = make_dataset, dict(options, shuffle=True, drop_remainder=True)

    def batches(**shard):
        dataset = build(embedded_stories[:6], preprocessor, **options, **shard)
        return [sorted(map(tuple, x["decoder_token_ids"].numpy().tolist())) for x, _ in dataset]

    whole = batches()
    shards = [batches(num_shards=2, shard_index=i) for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(whole) > 1
    for batch, first, second in zip(whole, *shards):
        assert len(first) == len(second) == 2
        assert sorted(first + second) == batch


def test_a_resumed_stream_skips_the_batches_already_trained(valued_stories, valued_preprocessor):
    options = dict(image_size=8, target_image_size=8, batch_size=2, seed=5, epochs=3)

    def batches(**position):
        dataset = make_train_stream(valued_stories, valued_preprocessor, **options, **position)
        return [inputs["decoder_token_ids"].numpy().tolist() for inputs, _ in dataset]

    whole = batches()
    steps = len(whole) // 3
    # Resumed in epoch 2 after 1 batch: the rest of the same stream.
    assert batches(first_epoch=1, first_step=1) == whole[steps + 1 :]
    # Each epoch is its own seeded permutation.
    assert whole[:steps] != whole[steps : 2 * steps]
    with pytest.raises(ValueError, match=rf"first_step must be in \[0, {steps}\)"):
        make_train_stream(valued_stories, valued_preprocessor, **options, first_step=steps)


def test_frame_keys_match_exactly_when_the_frames_do(valued_stories, valued_preprocessor):
    # Frame k of every valued story is the same image (filled with 10*k).
    dataset = make_dataset(
        valued_stories,
        valued_preprocessor,
        image_size=8,
        target_image_size=8,
        batch_size=10,
        frame_keys=True,
    )
    inputs, targets = next(iter(dataset))
    values = inputs["images"].numpy()[:, :, 0, 0, 0].reshape(-1)
    keys = targets["context_frame_keys"].numpy().reshape(-1)
    assert len(set(values.tolist())) > 3
    np.testing.assert_array_equal(
        values[:, None] == values[None, :], keys[:, None] == keys[None, :]
    )


@pytest.mark.parametrize("modality", ["images", "captions"])
def test_shuffle_context_takes_one_modality_from_another_window(
    valued_stories, valued_preprocessor, modality
):
    from kstory.data.pipeline import shuffle_context

    options = dict(image_size=8, target_image_size=8, batch_size=3)
    ordered = make_dataset(valued_stories, valued_preprocessor, **options)
    num_windows = sum(story.num_frames - 4 for story in valued_stories)
    shuffled = shuffle_context(ordered, modality, num_windows, batch_size=3)

    def windows(dataset):
        return [
            keras.tree.map_structure(lambda x: x.numpy(), sample) for sample in dataset.unbatch()
        ]

    own, paired = windows(ordered), windows(shuffled)
    assert len(paired) == num_windows
    swapped = ("images",) if modality == "images" else ("token_ids", "padding_mask")
    for index, ((inputs, targets), (new_inputs, new_targets)) in enumerate(zip(own, paired)):
        donor = own[(index + num_windows // 2) % num_windows][0]
        for name, value in new_inputs.items():
            np.testing.assert_array_equal(value, donor[name] if name in swapped else inputs[name])
        for name, value in new_targets.items():
            np.testing.assert_array_equal(value, targets[name])
    with pytest.raises(ValueError, match="modality must be one of"):
        shuffle_context(ordered, "sound", num_windows, 3)
