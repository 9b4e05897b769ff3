"""Exports a `StoryModel` as a TensorFlow SavedModel with serving signatures."""

import os
import shutil
import sys
import tempfile

import keras

from kstory.data.entities import ENTITY_KINDS
from kstory.data.entities import num_entity_slots
from kstory.data.entities import slot_names
from kstory.export.backend_subprocess import run_under_backend
from kstory.export.serving_files import VOCABULARY_FILE
from kstory.export.serving_files import write_serving_files
from kstory.workdir import load_model_file

# Metadata, preprocessor config and vocabulary, beside the graph: files that
# are not graph assets go under `assets.extra/` in a SavedModel.
SERVING_DIR = os.path.join("assets.extra", "kstory")
SIGNATURES = ("serving_default", "serve_tensors", "embed_images", "embed_texts", "detokenize")


def _tensor_specs(model):
    """Named `tf.TensorSpec`s of the tensor signatures' inputs."""
    import tensorflow as tf

    backbone = model.backbone
    steps, size = backbone.num_context_steps, backbone.image_size
    length = model.preprocessor.sequence_length
    return {
        "images": tf.TensorSpec((None, steps, size, size, 3), tf.uint8, name="images"),
        "token_ids": tf.TensorSpec((None, steps, length), tf.int32, name="token_ids"),
        "padding_mask": tf.TensorSpec((None, steps, length), tf.int32, name="padding_mask"),
        "frames": tf.TensorSpec((None, size, size, 3), tf.uint8, name="images"),
        "caption_token_ids": tf.TensorSpec((None, length), tf.int32, name="token_ids"),
        "caption_padding_mask": tf.TensorSpec((None, length), tf.int32, name="padding_mask"),
        "context_entities": tf.TensorSpec(
            (None, steps, num_entity_slots(backbone.entity_slots)),
            tf.int32,
            name="context_entities",
        ),
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


def caption_text(tokenizer, token_ids):
    """Generated ids -> captions in TensorFlow ops, for the serving graph.

    `StoryTextPreprocessor.generate_postprocess` in the graph: the words
    before the first [SEP], without [CLS] and padding, detokenised by the
    keras-hub tokenizer (subwords joined).

    Args:
        tokenizer: the model's keras-hub WordPiece tokenizer.
        token_ids: int tensor `(batch, length)`.

    Returns:
        string tensor `(batch,)`.
    """
    import tensorflow as tf

    ends = tf.cast(tf.equal(token_ids, tokenizer.sep_token_id), tf.int32)
    words = tf.cumsum(ends, axis=1) == 0
    for special in (tokenizer.cls_token_id, tokenizer.pad_token_id):
        words &= tf.not_equal(token_ids, special)
    return tokenizer.detokenize(tf.ragged.boolean_mask(token_ids, words))


def entity_presence(entities, slots):
    """Entity-id strings -> slot presence, in TensorFlow ops.

    `kstory.data.entities.presence` in the graph: each string holds one
    frame's ids separated by spaces (`"char1 obj2 bg1"`); ids with no slot
    (another kind, a number above `slots`) are left out.

    Args:
        entities: string tensor `(batch, steps)`.
        slots: int. Slots per kind.

    Returns:
        int32 `(batch, steps, num_slots)`.
    """
    import tensorflow as tf

    shape = tf.shape(entities)
    ids = tf.strings.split(tf.reshape(entities, [-1]))
    values = ids.flat_values
    well_formed = tf.strings.regex_full_match(values, "(char|obj|bg)[1-9][0-9]{0,5}")
    digits = tf.strings.regex_replace(values, "^[a-z]+", "")
    numbers = tf.strings.to_number(tf.where(well_formed, digits, "0"), tf.int32)
    kinds = tf.strings.regex_replace(values, "[0-9]+$", "")
    kind_index = tf.zeros_like(numbers)
    for index, kind in enumerate(ENTITY_KINDS):
        kind_index += tf.where(tf.equal(kinds, kind), index, 0)
    valid = well_formed & (numbers <= slots)
    slot = tf.boolean_mask(kind_index * slots + numbers - 1, valid)
    rows = tf.boolean_mask(ids.value_rowids(), valid)
    num_slots = num_entity_slots(slots)
    flat = tf.scatter_nd(
        tf.stack([rows, tf.cast(slot, tf.int64)], axis=1),
        tf.ones_like(slot),
        tf.cast(tf.stack([ids.nrows(), num_slots]), tf.int64),
    )
    return tf.reshape(tf.minimum(flat, 1), [shape[0], shape[1], num_slots])


def entity_text(probabilities, slots):
    """The grounding head's probabilities -> one line of ids per story, in
    TensorFlow ops (`kstory.data.entities.entities_line` of `predicted_ids`:
    masked slots have probability 0)."""
    import tensorflow as tf

    names = [name if " " not in name else f"+{name}" for name in slot_names(slots)]
    chosen = probabilities > 0.5
    named = tf.broadcast_to(tf.constant(names), tf.shape(probabilities))
    return tf.strings.reduce_join(tf.ragged.boolean_mask(named, chosen), axis=1, separator=" ")


def _raw_serving_function(model, serve_tensors):
    """`serving_default`: encoded frames and caption strings in, a caption and
    a frame out, every step in the graph.

    Frames are decoded and resized by `decode_frame`, the tf.data pipeline's
    own function, and captions tokenised by the model's keras-hub
    preprocessor (tensorflow-text ops); the ids `serve_tensors` generates
    become text as `StoryTextPreprocessor.generate_postprocess` makes it.
    """
    import tensorflow as tf

    from kstory.data.pipeline import decode_frame

    backbone, preprocessor = model.backbone, model.preprocessor
    steps, size = backbone.num_context_steps, backbone.image_size
    resize = backbone.image_resize
    grounding = backbone.grounding is not None

    def serve(images, captions, entities=None):
        frames = tf.map_fn(
            lambda encoded: decode_frame(encoded, size, resize),
            tf.reshape(images, [-1]),
            fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8),
        )
        text = preprocessor(captions)
        tensors = {
            "images": tf.reshape(frames, [-1, steps, size, size, 3]),
            "token_ids": text["token_ids"],
            "padding_mask": tf.cast(text["padding_mask"], tf.int32),
        }
        if grounding:
            tensors["context_entities"] = entity_presence(entities, backbone.entity_slots)
        outputs = serve_tensors(**tensors)
        image = tf.clip_by_value(tf.cast(outputs["next_image"], tf.float32), 0.0, 1.0)
        image = tf.cast(tf.round(image * 255.0), tf.uint8)
        served = {
            "caption": caption_text(preprocessor.tokenizer, outputs["next_token_ids"]),
            "next_image": image,
            "next_image_png": tf.map_fn(tf.io.encode_png, image, fn_output_signature=tf.string),
        }
        if grounding:
            probabilities = tf.sigmoid(tf.cast(outputs["entity_logits"], tf.float32))
            served["entity_probabilities"] = probabilities
            served["entities"] = entity_text(probabilities, backbone.entity_slots)
        return served

    signature = [
        tf.TensorSpec((None, steps), tf.string, name="images"),
        tf.TensorSpec((None, steps), tf.string, name="captions"),
    ]
    if grounding:
        signature.append(tf.TensorSpec((None, steps), tf.string, name="entities"))
        serving_default = tf.function(serve, input_signature=signature)
    else:
        serving_default = tf.function(
            lambda images, captions: serve(images, captions), input_signature=signature
        )
    serving_default.get_concrete_function()
    return serving_default


def _write_saved_model(model, path, verbose):
    """Writes the SavedModel under the TensorFlow or JAX backend."""
    specs = _tensor_specs(model)
    backbone = model.backbone
    with tempfile.TemporaryDirectory() as scratch:
        write_serving_files(model, scratch, "tf_saved_model")
        archive = keras.export.ExportArchive()
        archive.track(model)

        names = ["images", "token_ids", "padding_mask"]
        if backbone.grounding is not None:
            names.append("context_entities")

            def serve_tensors(images, token_ids, padding_mask, context_entities):
                return model.predict_next(
                    dict(zip(names, (images, token_ids, padding_mask, context_entities)))
                )

        else:

            def serve_tensors(images, token_ids, padding_mask):
                return model.predict_next(dict(zip(names, (images, token_ids, padding_mask))))

        # `serving_default` calls the traced `serve_tensors`.
        raw_inputs = [specs[name] for name in names]
        traced = archive.add_endpoint("serve_tensors", serve_tensors, input_signature=raw_inputs)
        archive.add_endpoint("serving_default", _raw_serving_function(model, traced))
        archive.add_endpoint(
            "embed_images",
            lambda images: {"image_embedding": backbone.embed_images(images)},
            input_signature=[specs["frames"]],
        )
        archive.add_endpoint(
            "embed_texts",
            lambda token_ids, padding_mask: {
                "text_embedding": backbone.embed_texts(token_ids, padding_mask)
            },
            input_signature=[specs["caption_token_ids"], specs["caption_padding_mask"]],
        )
        table, detokenize = _detokenizer(os.path.join(scratch, VOCABULARY_FILE))
        archive.track(table)
        archive.add_endpoint("detokenize", detokenize)
        archive.write_out(path, verbose=verbose)
        shutil.copytree(scratch, os.path.join(path, SERVING_DIR), dirs_exist_ok=True)


def export_saved_model(model, path, verbose=False):
    """Exports a `StoryModel` as a SavedModel, from any backend.

    Signatures (each also a method of `tf.saved_model.load(path)`), every
    input named:

    - `serving_default`: raw inputs, what a TF Serving or Vertex client
      sends. `images` string `(batch, steps)`, the encoded PNG/JPEG/GIF/BMP
      bytes of the context frames at any size, and `captions` string
      `(batch, steps)` -> `caption` string `(batch,)`, `next_image` uint8
      `(batch, T, T, 3)` and `next_image_png` string `(batch,)`. Decoding,
      resizing, tokenisation, greedy generation and detokenisation run in the
      graph (it needs `import tensorflow_text` to load); bad bytes fail that
      call with TensorFlow's "Unknown image file format" error. With a
      grounding head it also takes `entities` string `(batch, steps)`, each
      context frame's entity ids separated by spaces (`"char1 obj2 bg1"`;
      empty when unknown), and returns `entity_probabilities` float32
      `(batch, num_slots + kinds)` and `entities` string `(batch,)`, the
      ids predicted in the next frame (`"obj1 bg2 +new obj"`).
    - `serve_tensors`: `images` uint8 `(batch, steps, size, size, 3)`,
      `token_ids` and `padding_mask` int32 `(batch, steps, length)` ->
      `next_image` float32 in [0, 1] and `next_token_ids` int32; with a
      grounding head, `context_entities` int32 `(batch, steps, num_slots)`
      in, `entity_logits` out.
    - `embed_images`: `images` uint8 `(batch, size, size, 3)` ->
      `image_embedding`; `embed_texts`: one caption's `token_ids` /
      `padding_mask` `(batch, length)` -> `text_embedding`. For retrieval.
    - `detokenize`: `token_ids` -> `tokens` (strings), from the vocabulary
      asset.

    `assets.extra/kstory/` holds `serving.json`, the preprocessor's config and
    its vocabulary, which `kstory.serving.StoryServingPreprocessor` reads to
    prepare inputs for the tensor signatures.

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
    served.signatures["serving_default"](images=frame_bytes, captions=captions)["caption"]
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
