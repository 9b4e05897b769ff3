"""Exports a `StoryModel` as a TensorFlow SavedModel with serving signatures."""

import os
import shutil
import sys
import tempfile

import keras

from kstory.export.backend_subprocess import run_under_backend
from kstory.export.serving_files import VOCABULARY_FILE
from kstory.export.serving_files import write_serving_files
from kstory.workdir import load_model_file

# Metadata, preprocessor config and vocabulary, beside the graph: files that
# are not graph assets go under `assets.extra/` in a SavedModel.
SERVING_DIR = os.path.join("assets.extra", "kstory")
SIGNATURES = ("serve", "serve_float", "embed_images", "embed_texts", "detokenize")


def _input_specs(model):
    backbone = model.backbone
    steps, size = backbone.num_context_steps, backbone.image_size
    length = model.preprocessor.sequence_length

    def context(image_dtype):
        return {
            "images": keras.InputSpec(shape=(None, steps, size, size, 3), dtype=image_dtype),
            "token_ids": keras.InputSpec(shape=(None, steps, length), dtype="int32"),
            "padding_mask": keras.InputSpec(shape=(None, steps, length), dtype="int32"),
        }

    return {
        "serve": context("uint8"),
        "serve_float": context("float32"),
        "embed_images": {
            "images": keras.InputSpec(shape=(None, size, size, 3), dtype="uint8"),
        },
        "embed_texts": {
            "token_ids": keras.InputSpec(shape=(None, length), dtype="int32"),
            "padding_mask": keras.InputSpec(shape=(None, length), dtype="int32"),
        },
    }


def _detokenizer(vocabulary_path):
    """A traced ids -> tokens function over a lookup table of the vocabulary.

    The table makes the vocabulary file a graph asset of the SavedModel.
    """
    import tensorflow as tf

    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            vocabulary_path,
            key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        ),
        default_value="[UNK]",
    )

    @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32, name="token_ids")])
    def detokenize(token_ids):
        return {"tokens": table.lookup(tf.cast(token_ids, tf.int64))}

    detokenize.get_concrete_function()
    return table, detokenize


def _write_saved_model(model, path, verbose):
    """Writes the SavedModel under the TensorFlow or JAX backend."""
    specs = _input_specs(model)
    backbone = model.backbone
    with tempfile.TemporaryDirectory() as scratch:
        write_serving_files(model, scratch, "tf_saved_model")
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve", lambda inputs: model.predict_next(inputs), input_signature=[specs["serve"]]
        )
        archive.add_endpoint(
            "serve_float",
            lambda inputs: model.predict_next(inputs),
            input_signature=[specs["serve_float"]],
        )
        archive.add_endpoint(
            "embed_images",
            lambda inputs: {"image_embedding": backbone.embed_images(inputs["images"])},
            input_signature=[specs["embed_images"]],
        )
        archive.add_endpoint(
            "embed_texts",
            lambda inputs: {
                "text_embedding": backbone.embed_texts(inputs["token_ids"], inputs["padding_mask"])
            },
            input_signature=[specs["embed_texts"]],
        )
        table, detokenize = _detokenizer(os.path.join(scratch, VOCABULARY_FILE))
        archive.track(table)
        archive.add_endpoint("detokenize", detokenize)
        archive.write_out(path, verbose=verbose)
        shutil.copytree(scratch, os.path.join(path, SERVING_DIR), dirs_exist_ok=True)


def export_saved_model(model, path, verbose=False):
    """Exports a `StoryModel` as a SavedModel, from any backend.

    Signatures (each also a method of `tf.saved_model.load(path)`):

    - `serve` (also `serving_default`): one batch of context steps,
      `images` uint8 `(batch, steps, size, size, 3)`, `token_ids` and
      `padding_mask` int32 `(batch, steps, length)` -> `next_image` float32
      in [0, 1] and `next_token_ids` int32, generated greedily by a loop
      inside the graph.
    - `serve_float`: the same with float32 0-255 images.
    - `embed_images`: `images` uint8 `(batch, size, size, 3)` ->
      `image_embedding`; `embed_texts`: one caption's `token_ids` /
      `padding_mask` `(batch, length)` -> `text_embedding`. For retrieval.
    - `detokenize`: `token_ids` -> `tokens` (strings), from the vocabulary
      asset.

    `assets.extra/kstory/` holds `serving.json`, the preprocessor's config and
    its vocabulary, which `kstory.serving.SavedStoryModel` uses to turn raw
    frames and captions into inputs and ids back into text.

    Under TensorFlow and JAX the model is exported in this process. PyTorch
    cannot trace to a SavedModel (it needs torch_xla), so there the model is
    saved as `.keras` and exported under TensorFlow in a subprocess.

    Args:
        model: a built `StoryModel` with its preprocessor.
        path: str. The SavedModel folder to write.
        verbose: bool. Print the signatures.

    Returns:
        str, `path`.

    Example:
    ```python
    export_saved_model(model, "runs/tiny/export/tf_saved_model")
    served = tf.saved_model.load("runs/tiny/export/tf_saved_model")
    served.serve(inputs)["next_token_ids"]
    ```
    """
    if keras.config.backend() == "torch":
        with tempfile.TemporaryDirectory() as scratch:
            model_path = os.path.join(scratch, "model.keras")
            model.save(model_path)
            export_saved_model_file(model_path, path)
        return path
    _write_saved_model(model, path, verbose)
    return path


def export_saved_model_file(model_path, path):
    """Exports a `.keras` file as a SavedModel; under PyTorch, via TensorFlow
    in a subprocess."""
    if keras.config.backend() == "torch":
        run_under_backend("tensorflow", __name__, [model_path, path])
        return path
    return export_saved_model(load_model_file(model_path, compile=False), path)


def main(argv):
    if len(argv) != 2:
        raise SystemExit("usage: python -m kstory.export.saved_model_export MODEL.keras OUTPUT_DIR")
    export_saved_model_file(*argv)


if __name__ == "__main__":
    main(sys.argv[1:])
