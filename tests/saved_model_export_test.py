import io
import json
import os
import re
import subprocess
import sys

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


@pytest.fixture(scope="module")
def talkative_model(trained_model, tiny_preprocessor):
    """A model whose greedy captions are words, not one [SEP]: no special
    token wins, and noise on the output layer varies the words. (The test of
    `caption_text` covers [SEP] and joined subwords.)"""
    model = build_tiny_model(tiny_preprocessor, compile=False, text_decoder_attention_heads=2)
    model.set_weights(trained_model.get_weights())
    logits = model.backbone.text_decoder.logits
    noise = np.random.default_rng(0).normal(size=logits.kernel.shape).astype("float32")
    logits.kernel.assign(keras.ops.convert_to_numpy(logits.kernel) + noise)
    bias = keras.ops.convert_to_numpy(logits.bias).copy()
    tokenizer = tiny_preprocessor.tokenizer
    bias[[tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]] -= 100.0
    logits.bias.assign(bias)
    return model


@pytest.fixture(scope="module")
def talkative_export(talkative_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "talkative")
    return export_saved_model(talkative_model, path)


def _context(batch):
    return {name: batch[0][name] for name in ("images", "token_ids", "padding_mask")}


def test_serve_tensors_matches_the_keras_model_and_its_greedy_ids(
    trained_model, exported, tiny_batch, tiny_preprocessor
):
    import tensorflow as tf

    serve_tensors = tf.saved_model.load(exported).signatures["serve_tensors"]
    inputs = _context(tiny_batch)
    expected = to_numpy(trained_model.predict_next(inputs))
    outputs = {name: value.numpy() for name, value in serve_tensors(**inputs).items()}
    np.testing.assert_allclose(outputs["next_image"], expected["next_image"], atol=1e-5)
    np.testing.assert_array_equal(outputs["next_token_ids"], expected["next_token_ids"])
    np.testing.assert_array_equal(
        outputs["next_token_ids"], to_numpy(trained_model.generate(inputs, "greedy"))
    )
    assert (outputs["next_token_ids"] == tiny_preprocessor.tokenizer.sep_token_id).any()

    # Another batch size.
    single = {name: value[:1] for name, value in inputs.items()}
    np.testing.assert_allclose(
        serve_tensors(**single)["next_image"].numpy(), expected["next_image"][:1], atol=1e-5
    )


def test_saved_model_cli_lists_named_inputs_in_every_signature(exported, capsys):
    # `saved_model_cli show --all --dir DIR`, in this process.
    from tensorflow.python.tools import saved_model_cli

    capsys.readouterr()
    saved_model_cli._show_all(exported)
    shown = capsys.readouterr().out
    inputs = {}
    for block in shown.split("signature_def['")[1:]:
        name, body = block.split("']", 1)
        body = body.split("The given SavedModel SignatureDef contains the following output(s)")[0]
        inputs[name] = set(re.findall(r"inputs\['(\w+)'\] tensor_info", body))
    inputs.pop("__saved_model_init_op", None)
    assert inputs == {
        "serving_default": {"images", "captions"},
        "serve_tensors": {"images", "token_ids", "padding_mask"},
        "embed_images": {"images"},
        "embed_texts": {"token_ids", "padding_mask"},
        "detokenize": {"token_ids"},
    }
    assert set(inputs) == set(SIGNATURES)
    assert "dtype: DT_STRING\n        shape: (-1, 4)" in shown


def test_embedding_signatures_match_the_backbone(trained_model, exported, tiny_batch):
    import tensorflow as tf

    signatures = tf.saved_model.load(exported).signatures
    inputs = _context(tiny_batch)
    backbone = trained_model.backbone
    images = inputs["images"][:, 1]
    np.testing.assert_allclose(
        signatures["embed_images"](images=images)["image_embedding"].numpy(),
        to_numpy(backbone.embed_images(images)),
        atol=1e-5,
    )
    texts = {name: inputs[name][:, 1] for name in ("token_ids", "padding_mask")}
    np.testing.assert_allclose(
        signatures["embed_texts"](**texts)["text_embedding"].numpy(),
        to_numpy(backbone.embed_texts(texts["token_ids"], texts["padding_mask"])),
        atol=1e-5,
    )


def test_vocabulary_is_an_asset_and_detokenizes(exported, tiny_preprocessor):
    import tensorflow as tf

    served = tf.saved_model.load(exported)
    vocabulary = tiny_preprocessor.tokenizer.get_vocabulary()
    ids = np.arange(len(vocabulary), dtype="int32")[None]
    tokens = served.signatures["detokenize"](token_ids=ids)["tokens"].numpy()[0]
    assert [token.decode() for token in tokens] == vocabulary
    assert os.path.exists(os.path.join(exported, "assets", "vocabulary.txt"))
    for name in ("serving.json", "preprocessor.json", "vocabulary.txt"):
        assert os.path.exists(os.path.join(exported, SERVING_DIR, name)), name


def test_caption_text_in_the_graph_is_generate_postprocess(tiny_preprocessor):
    import tensorflow as tf

    from kstory.export.saved_model_export import caption_text

    tokenizer = tiny_preprocessor.tokenizer
    vocabulary = tokenizer.get_vocabulary()
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    a, b, c = (vocabulary.index(word) for word in ("the", "red", "blue"))
    suffix = next(i for i, token in enumerate(vocabulary) if token.startswith("##"))
    ids = np.array(
        [
            [cls, a, b, suffix, sep, c, pad, pad],  # Ends at [SEP]; a subword joins.
            [cls, a, a, b, c, a, b, c],  # No [SEP]: every word.
            [cls, sep, a, b, c, sep, a, b],  # Empty.
            [a, cls, b, pad, c, sep, sep, a],  # [CLS] and padding inside are dropped.
        ],
        "int32",
    )
    traced = tf.function(lambda token_ids: caption_text(tokenizer, token_ids))
    captions = [caption.decode() for caption in traced(tf.constant(ids)).numpy()]
    assert captions == tiny_preprocessor.generate_postprocess(ids)
    assert captions[2] == "" and captions[1].count(" ") == 6
    assert captions[0].split()[-1] == "red" + vocabulary[suffix][2:]


def _held_out(embedded_stories):
    """Context frames (encoded bytes) and captions of stories the model did
    not train on; the last story's frames re-encoded as 96 px JPEG."""
    from PIL import Image

    stories = embedded_stories[6:9]
    frames = [list(story.images[:4]) for story in stories]
    captions = [list(story.texts[:4]) for story in stories]
    jpegs = []
    for frame in frames[-1]:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(frame)).resize((96, 96)).save(buffer, format="JPEG")
        jpegs.append(buffer.getvalue())
    frames[-1] = jpegs
    return frames, captions


def _assert_predicts_as_kstory_predict(trained_model, frames, captions, result):
    """Captions equal; frames `kstory predict`'s rounded to uint8 (1e-5 slack)."""
    from kstory.evaluation.predict import predict_context

    for story, (story_frames, story_captions) in enumerate(zip(frames, captions)):
        expected = predict_context(trained_model, story_frames, story_captions)
        assert result["captions"][story] == expected["caption"], story
        served = np.asarray(result["next_images"][story])
        assert served.dtype.kind in "ui" and served.shape == expected["next_image"].shape
        difference = np.abs(served / 255.0 - expected["next_image"])
        assert difference.max() <= 0.5 / 255 + 1e-5, (story, difference.max())


def test_saved_story_model_serves_raw_frames_and_captions(
    talkative_model, talkative_export, embedded_stories
):
    from PIL import Image

    trained_model = talkative_model
    served = SavedStoryModel(talkative_export)
    frames, captions = _held_out(embedded_stories)
    result = served.predict(frames, captions)
    assert result["next_images"].dtype == np.uint8
    _assert_predicts_as_kstory_predict(trained_model, frames, captions, result)
    # The model's own ids, as the tensor signature gives them, say the same.
    inputs = served.preprocessor.prepare(frames, captions)
    expected = to_numpy(trained_model.predict_next(inputs))
    assert result["captions"] == served.preprocessor.decode(expected["next_token_ids"])
    assert all(result["captions"])  # Words, not an empty caption.
    for png, image in zip(result["next_images_png"], result["next_images"]):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image)
    # One story, not a batch; arrays are sent as PNG.
    arrays = [np.asarray(Image.open(io.BytesIO(frame)).convert("RGB")) for frame in frames[0]]
    one = served.predict(arrays, captions[0])
    assert one["captions"] == result["captions"][:1]
    np.testing.assert_array_equal(one["next_images"], result["next_images"][:1])
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
    with pytest.raises(ValueError, match="Story 0 has 3 frames and 4 captions"):
        served.predict(frames[0][:3], captions[0])


def test_bad_bytes_fail_that_request_only(exported, embedded_stories):
    import tensorflow as tf

    served = tf.saved_model.load(exported).signatures["serving_default"]
    frames, captions = _held_out(embedded_stories)
    bad = [frames[0][:3] + [b"not an image"]]
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        served(images=tf.constant(bad), captions=tf.constant(captions[:1]))
    # The same loaded model serves the next request.
    good = served(images=tf.constant(frames[:1]), captions=tf.constant(captions[:1]))
    assert good["caption"].shape == (1,)


# A client with TensorFlow and tensorflow-text only: kstory and keras-hub
# cannot be imported (TensorFlow imports Keras itself when it is installed).
# It sends the frames' bytes and the captions to `serving_default`, then the
# same as the JSON body of a TF Serving REST `predict` request, decoded as the
# server decodes it (row format; a {"b64": ...} object is bytes).
CLIENT = """
import base64, json, sys


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kstory", "keras_hub"):
            raise ImportError(f"{name} is blocked: the export must serve without it")


sys.meta_path.insert(0, Blocked())
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the tokeniser's ops)

export_dir, request_path = sys.argv[1:]
with open(request_path) as file:
    stories = json.load(file)
served = tf.saved_model.load(export_dir)
frames = [[open(path, "rb").read() for path in story["frames"]] for story in stories]
captions = [story["captions"] for story in stories]
direct = served.signatures["serving_default"](
    images=tf.constant(frames), captions=tf.constant(captions)
)

body = json.dumps({
    "signature_name": "serving_default",
    "instances": [
        {"images": [{"b64": base64.b64encode(f).decode()} for f in story_frames],
         "captions": story_captions}
        for story_frames, story_captions in zip(frames, captions)
    ],
})


def decoded(value):
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return [decoded(item) for item in value] if isinstance(value, list) else value


request = json.loads(body)
instances = [{name: decoded(value) for name, value in row.items()} for row in request["instances"]]
signature = served.signatures[request["signature_name"]]
rest = signature(**{name: tf.constant([row[name] for row in instances]) for name in instances[0]})


def as_json(outputs):
    pngs = outputs["next_image_png"].numpy()
    return {
        "captions": [caption.decode() for caption in outputs["caption"].numpy()],
        "next_images": outputs["next_image"].numpy().tolist(),
        "next_images_png": [base64.b64encode(png).decode() for png in pngs],
    }


print(json.dumps({"direct": as_json(direct), "rest": as_json(rest),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                    ("kstory", "keras_hub"))}))
"""


def test_a_client_without_kstory_gets_kstory_predicts_outputs(
    talkative_model, talkative_export, embedded_stories, tmp_path
):
    frames, captions = _held_out(embedded_stories)
    stories = []
    for index, (story_frames, story_captions) in enumerate(zip(frames, captions)):
        paths = []
        for step, frame in enumerate(story_frames):
            path = tmp_path / f"story{index}_frame{step}"
            path.write_bytes(frame)
            paths.append(str(path))
        stories.append({"frames": paths, "captions": story_captions})
    (tmp_path / "request.json").write_text(json.dumps(stories))
    (tmp_path / "client.py").write_text(CLIENT)
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "client.py"),
            talkative_export,
            str(tmp_path / "request.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["modules"] == []
    assert answer["rest"] == answer["direct"]
    assert all(answer["direct"]["captions"])
    _assert_predicts_as_kstory_predict(talkative_model, frames, captions, answer["direct"])
