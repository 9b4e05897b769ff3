"""Turns raw frames and captions into an export's inputs, and ids into text."""

import json
import os

import keras
import numpy as np

from kstory.data.entities import num_entity_slots
from kstory.data.entities import presence
from kstory.data.pipeline import load_frame
from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.export.serving_files import PREPROCESSOR_FILE
from kstory.export.serving_files import SERVING_FILE

_SAVED_MODEL_SERVING_DIR = os.path.join("assets.extra", "kstory")


def _serving_dir(export_dir):
    for candidate in (os.path.join(export_dir, _SAVED_MODEL_SERVING_DIR), export_dir):
        if os.path.exists(os.path.join(candidate, SERVING_FILE)):
            return candidate
    raise ValueError(
        f"{export_dir} is not a kstory export: no {SERVING_FILE} in it or in "
        f"{_SAVED_MODEL_SERVING_DIR}/. Write one with `kstory export`."
    )


def _serving_dtype(name, value):
    """`value` in the dtype its signature takes, or a `ValueError` naming it."""
    kind = value.dtype.kind
    if name == "images":
        if value.dtype == np.uint8:
            return value
        hint = "uint8, 0-255 (round float frames first)"
    elif kind in "iu" or (name in ("padding_mask", "context_entities") and kind == "b"):
        return value.astype("int32")
    else:
        hint = "integers" if name == "token_ids" else "integers or booleans"
    raise ValueError(f"{name} must be {hint}; got {value.dtype}.")


def stories_batch(frames, captions, num_context_steps):
    """One story's frames and captions, or a batch of them, as a batch.

    Raises a `ValueError` naming the story whose frames or captions are not
    `num_context_steps` long.
    """
    if captions and isinstance(captions[0], str):
        frames, captions = [frames], [captions]
    if len(frames) != len(captions):
        raise ValueError(f"Got {len(frames)} frame lists but {len(captions)} caption lists.")
    for index, (story_frames, story_captions) in enumerate(zip(frames, captions)):
        if len(story_frames) != num_context_steps or len(story_captions) != num_context_steps:
            raise ValueError(
                f"Story {index} has {len(story_frames)} frames and {len(story_captions)} "
                f"captions; the model takes {num_context_steps} of each."
            )
    return frames, captions


def entities_batch(entities, batch_size, num_context_steps):
    """Context entity ids as a batch: a list per story of an id list per frame.

    Args:
        entities: one story's id lists, a batch of them, or None (no
            grounding known: every frame empty).
        batch_size: int. Stories in the batch.
        num_context_steps: int.
    """
    if entities is None:
        return [[()] * num_context_steps for _ in range(batch_size)]
    entities = list(entities)
    if (
        not entities
        or not isinstance(entities[0], (list, tuple))
        or not all(isinstance(frame, (list, tuple)) for frame in entities[0])
    ):
        entities = [entities]  # One story's.
    if len(entities) != batch_size or any(len(story) != num_context_steps for story in entities):
        raise ValueError(
            f"entities must hold {num_context_steps} id lists per story, for {batch_size} stories."
        )
    return entities


class StoryServingPreprocessor:
    """Prepares raw inputs for an exported story model and decodes its ids.

    Reads the files that `kstory export` writes beside the model
    (`serving.json`, the preprocessor's config and its vocabulary), so the
    captions are tokenised and the frames resized exactly as in training.

    Args:
        export_dir: str. A SavedModel or ONNX folder written by
            `kstory export`.

    Example:
    ```python
    preprocessor = StoryServingPreprocessor("runs/tiny/export/tf_saved_model")
    inputs = preprocessor.prepare(frames, captions)
    inputs["images"].shape
    # (1, 4, 32, 32, 3)
    ```
    """

    def __init__(self, export_dir):
        directory = _serving_dir(export_dir)
        with open(os.path.join(directory, SERVING_FILE)) as file:
            self.metadata = json.load(file)
        with open(os.path.join(directory, PREPROCESSOR_FILE)) as file:
            self.text_preprocessor = keras.saving.deserialize_keras_object(json.load(file))
        if not isinstance(self.text_preprocessor, StoryTextPreprocessor):
            raise ValueError(f"{PREPROCESSOR_FILE} in {directory} is not a StoryTextPreprocessor.")
        self.text_preprocessor.tokenizer.load_assets(directory)
        self.num_context_steps = self.metadata["num_context_steps"]
        self.image_size = self.metadata["image_size"]
        # Exports written before these existed squash and have no grounding.
        self.image_resize = self.metadata.get("image_resize", "squash")
        self.grounding = self.metadata.get("grounding_head", False)
        self.entity_slots = self.metadata.get("entity_slots", 0)

    def prepare_images(self, frames):
        """Frames (bytes, paths or RGB arrays) -> uint8 `(len(frames), size, size, 3)`."""
        return np.stack([load_frame(frame, self.image_size, self.image_resize) for frame in frames])

    def prepare_texts(self, captions):
        """Captions -> int32 `token_ids` and `padding_mask`, `(len(captions), length)`."""
        if isinstance(captions, str):
            raise ValueError("prepare_texts() takes a list of captions, not one string.")
        packed = self.text_preprocessor(list(captions))
        return {
            "token_ids": np.asarray(packed["token_ids"], "int32"),
            "padding_mask": np.asarray(packed["padding_mask"], "int32"),
        }

    def prepare_entities(self, entities, batch_size):
        """Each context frame's entity ids -> int32 `context_entities`
        `(batch, steps, num_slots)` (see `entities_batch`)."""
        entities = entities_batch(entities, batch_size, self.num_context_steps)
        return np.array(
            [[presence(ids, self.entity_slots) for ids in story] for story in entities], "int32"
        )

    def prepare(self, frames, captions, entities=None):
        """One story's context, or a batch of them, as `serve_tensors` inputs.

        Args:
            frames: `num_context_steps` frames of one story, or a list of such
                lists for a batch. A frame is encoded bytes, a path or an RGB
                array.
            captions: the matching captions: `num_context_steps` strings, or a
                list of such lists.
            entities: for an export with a grounding head, each context
                frame's entity ids (`["obj1", "bg1"]` per frame, per story),
                or None when unknown.

        Returns:
            dict of numpy arrays: `images` uint8 `(batch, steps, size, size,
            3)`, `token_ids` and `padding_mask` int32 `(batch, steps, length)`;
            with grounding, `context_entities` int32 `(batch, steps, slots)`.
        """
        frames, captions = stories_batch(frames, captions, self.num_context_steps)
        images = np.stack([self.prepare_images(story_frames) for story_frames in frames])
        flat = self.prepare_texts([caption for story in captions for caption in story])
        shape = (len(captions), self.num_context_steps, -1)
        prepared = {
            "images": images,
            "token_ids": flat["token_ids"].reshape(shape),
            "padding_mask": flat["padding_mask"].reshape(shape),
        }
        if self.grounding:
            prepared["context_entities"] = self.prepare_entities(entities, len(captions))
        return prepared

    def input_shapes(self):
        """The shapes the export's `serve_tensors` signature takes, `None` for the batch."""
        steps, size = self.num_context_steps, self.image_size
        length = self.metadata["sequence_length"]
        shapes = {
            "images": (None, steps, size, size, 3),
            "token_ids": (None, steps, length),
            "padding_mask": (None, steps, length),
        }
        if self.grounding:
            shapes["context_entities"] = (None, steps, num_entity_slots(self.entity_slots))
        return shapes

    def check_inputs(self, inputs):
        """Checks prepared inputs against the export; returns them as it takes them.

        `images` must be uint8, `token_ids` integers and `padding_mask`
        integers or booleans (both become int32). Shapes must match the export's, with
        one batch size for all inputs.

        Args:
            inputs: dict of arrays, e.g. from `prepare`.

        Returns:
            dict of numpy arrays in the dtypes the signature takes.

        Example:
        ```python
        preprocessor.check_inputs({"images": np.zeros((1, 4, 32, 32), "uint8"), ...})
        # ValueError: images must have shape (batch, 4, 32, 32, 3); got (1, 4, 32, 32).
        ```
        """
        shapes = self.input_shapes()
        if not isinstance(inputs, dict):
            raise ValueError(
                f"Inputs must be a dict with keys {sorted(shapes)}; got {type(inputs).__name__}."
            )
        missing = sorted(set(shapes) - set(inputs))
        if missing:
            raise ValueError(f"Inputs lack {missing}; the export takes {sorted(shapes)}.")
        checked, batch_sizes = {}, {}
        for name, shape in shapes.items():
            value = np.asarray(inputs[name])
            expected = "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"
            if value.ndim != len(shape) or any(
                d is not None and d != actual for d, actual in zip(shape, value.shape)
            ):
                raise ValueError(f"{name} must have shape {expected}; got {value.shape}.")
            checked[name] = _serving_dtype(name, value)
            batch_sizes[name] = value.shape[0]
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"Inputs disagree on the batch size: {batch_sizes}.")
        return checked

    def decode(self, token_ids):
        """Generated ids -> captions: the text between `[CLS]` and `[SEP]`."""
        return self.text_preprocessor.generate_postprocess(np.asarray(token_ids))
