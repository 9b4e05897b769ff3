"""The files an export carries so that raw inputs can be prepared for it."""

import json
import os

import keras

from kstory.version import __version__

VOCABULARY_FILE = "vocabulary.txt"
PREPROCESSOR_FILE = "preprocessor.json"
SERVING_FILE = "serving.json"


def serving_metadata(model, export_format):
    """What a server needs to know about a `StoryModel`'s inputs and outputs."""
    backbone = model.backbone
    tokenizer = model.preprocessor.tokenizer
    return {
        "format": export_format,
        "kstory_version": __version__,
        "keras_version": keras.__version__,
        "exported_under_backend": keras.config.backend(),
        "num_context_steps": backbone.num_context_steps,
        "image_size": backbone.image_size,
        "target_image_size": backbone.target_image_size,
        "image_resize": backbone.image_resize,
        "grounding_head": backbone.grounding is not None,
        "entity_slots": backbone.entity_slots,
        "sequence_length": model.preprocessor.sequence_length,
        "decoder_sequence_length": model.preprocessor.decoder_sequence_length,
        "embedding_dim": backbone.embedding_dim,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def write_serving_files(model, directory, export_format):
    """Writes `serving.json`, the preprocessor's config and its vocabulary.

    `kstory.serving.StoryServingPreprocessor` reads them back.
    """
    if model.preprocessor is None:
        raise ValueError("Exporting needs the model's preprocessor (its tokenizer).")
    os.makedirs(directory, exist_ok=True)
    model.preprocessor.tokenizer.save_assets(directory)
    if not os.path.exists(os.path.join(directory, VOCABULARY_FILE)):
        raise ValueError(
            f"The tokenizer {type(model.preprocessor.tokenizer).__name__} wrote no "
            f"{VOCABULARY_FILE}; export supports WordPiece (BERT-family) tokenizers."
        )
    with open(os.path.join(directory, PREPROCESSOR_FILE), "w") as file:
        json.dump(keras.saving.serialize_keras_object(model.preprocessor), file, indent=2)
    with open(os.path.join(directory, SERVING_FILE), "w") as file:
        json.dump(serving_metadata(model, export_format), file, indent=2)
