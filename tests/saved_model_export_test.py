import os

import keras
import numpy as np
import pytest
from test_case import to_numpy

from conftest import build_tiny_model
from kstory.export.saved_model_export import SERVING_DIR
from kstory.export.saved_model_export import SIGNATURES
from kstory.export.saved_model_export import export_saved_model
from kstory.serving import SavedStoryModel

# Tests sharing a module fixture stay on one xdist worker (make test).
pytestmark = pytest.mark.xdist_group("saved_model_export")


@pytest.fixture(scope="module")
def trained_model(tiny_preprocessor, tiny_dataset):
    model = build_tiny_model(tiny_preprocessor, text_decoder_attention_heads=2)
    model.fit(tiny_dataset.take(3), epochs=1, verbose=0)
    # Make [SEP] likely, so that some captions end inside the window and the
    # exported loop's stop-and-pad path runs.
    logits = model.backbone.text_decoder.logits
    bias = keras.ops.convert_to_numpy(logits.bias).copy()
    bias[tiny_preprocessor.tokenizer.sep_token_id] += 2.5
    logits.bias.assign(bias)
    return model


@pytest.fixture(scope="module")
def exported(trained_model, tmp_path_factory):
    # Under torch this takes the automatic route: .keras, then TensorFlow in
    # a subprocess.
    path = str(tmp_path_factory.mktemp("export") / "saved_model")
    assert export_saved_model(trained_model, path) == path
    return path


def _context(batch):
    return {name: batch[0][name] for name in ("images", "token_ids", "padding_mask")}


def test_serve_matches_the_keras_model_and_its_greedy_ids(
    trained_model, exported, tiny_batch, tiny_preprocessor
):
    import tensorflow as tf

    served = tf.saved_model.load(exported)
    inputs = _context(tiny_batch)
    expected = to_numpy(trained_model.predict_next(inputs))
    outputs = {name: value.numpy() for name, value in served.serve(inputs).items()}
    np.testing.assert_allclose(outputs["next_image"], expected["next_image"], atol=1e-5)
    np.testing.assert_array_equal(outputs["next_token_ids"], expected["next_token_ids"])
    np.testing.assert_array_equal(
        outputs["next_token_ids"], to_numpy(trained_model.generate(inputs, "greedy"))
    )
    assert (outputs["next_token_ids"] == tiny_preprocessor.tokenizer.sep_token_id).any()

    # Another batch size, and float 0-255 frames.
    single = {name: value[:1] for name, value in inputs.items()}
    np.testing.assert_allclose(
        served.serve(single)["next_image"].numpy(), expected["next_image"][:1], atol=1e-5
    )
    floats = served.serve_float({**inputs, "images": inputs["images"].astype("float32")})
    np.testing.assert_allclose(floats["next_image"].numpy(), expected["next_image"], atol=1e-5)
    np.testing.assert_array_equal(floats["next_token_ids"].numpy(), expected["next_token_ids"])
    assert set(SIGNATURES) | {"serving_default"} == set(served.signatures)


def test_embedding_signatures_match_the_backbone(trained_model, exported, tiny_batch):
    import tensorflow as tf

    served = tf.saved_model.load(exported)
    inputs = _context(tiny_batch)
    backbone = trained_model.backbone
    images = inputs["images"][:, 1]
    np.testing.assert_allclose(
        served.embed_images({"images": images})["image_embedding"].numpy(),
        to_numpy(backbone.embed_images(images)),
        atol=1e-5,
    )
    texts = {name: inputs[name][:, 1] for name in ("token_ids", "padding_mask")}
    np.testing.assert_allclose(
        served.embed_texts(texts)["text_embedding"].numpy(),
        to_numpy(backbone.embed_texts(texts["token_ids"], texts["padding_mask"])),
        atol=1e-5,
    )


def test_vocabulary_is_an_asset_and_detokenizes(exported, tiny_preprocessor):
    import tensorflow as tf

    served = tf.saved_model.load(exported)
    vocabulary = tiny_preprocessor.tokenizer.get_vocabulary()
    ids = np.arange(len(vocabulary), dtype="int32")[None]
    tokens = [token.decode() for token in served.detokenize(ids)["tokens"].numpy()[0]]
    assert tokens == vocabulary
    assert os.path.exists(os.path.join(exported, "assets", "vocabulary.txt"))
    for name in ("serving.json", "preprocessor.json", "vocabulary.txt"):
        assert os.path.exists(os.path.join(exported, SERVING_DIR, name)), name


def test_saved_story_model_serves_raw_frames_and_captions(
    trained_model, exported, embedded_stories
):
    served = SavedStoryModel(exported)
    stories = embedded_stories[:3]
    frames = [list(story.images[:4]) for story in stories]  # Encoded PNG bytes.
    captions = [list(story.texts[:4]) for story in stories]
    result = served.predict(frames, captions)
    inputs = served.preprocessor.prepare(frames, captions)
    expected = to_numpy(trained_model.predict_next(inputs))
    np.testing.assert_allclose(result["next_images"], expected["next_image"], atol=1e-5)
    assert result["captions"] == served.preprocessor.decode(expected["next_token_ids"])
    assert len(result["captions"]) == 3 and all(isinstance(c, str) for c in result["captions"])
    # One story, not a batch.
    one = served.predict(frames[0], captions[0])
    assert one["captions"] == result["captions"][:1]
    np.testing.assert_allclose(
        served.embed_texts(captions[0]),
        to_numpy(
            trained_model.backbone.embed_texts(inputs["token_ids"][0], inputs["padding_mask"][0])
        ),
        atol=1e-5,
    )
    assert served.embed_images(frames[0]).shape == (4, trained_model.backbone.embedding_dim)
    # Wrong inputs are refused by name before they reach the graph.
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 4, "):
        served.serve({**inputs, "images": inputs["images"][:, :, :8]})
    with pytest.raises(ValueError, match="token_ids must be integers; got float64"):
        served.serve({**inputs, "token_ids": inputs["token_ids"] * 1.0})
