"""Predicts the next step of one story: text, image and a storyboard."""

import glob
import os
import weakref

import keras
import numpy as np
from PIL import Image

from kstory.data.entities import entities_line
from kstory.data.entities import entity_probabilities
from kstory.data.entities import predicted_ids
from kstory.data.entities import presence
from kstory.data.image_check import image_problem
from kstory.data.pipeline import load_frame
from kstory.data.sources import load_splits
from kstory.data.story import Story
from kstory.data.story_parser import grounded_entity_ids
from kstory.data.story_parser import strip_grounding_tags
from kstory.evaluation.storyboard import draw_storyboard
from kstory.workdir import DATA_DIR
from kstory.workdir import PREDICTIONS_DIR
from kstory.workdir import load_workdir_config
from kstory.workdir import load_workdir_model

_IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.bmp", "*.gif")

_TRACED_PREDICT_NEXT = weakref.WeakKeyDictionary()


def predict_next_function(model, sampler):
    """`model.predict_next` with `sampler`, embeddings included; traced once
    per model under TensorFlow, where an eager decoding loop costs about three
    times as much.

    The trace leaves the batch axis open, so that a split's last, smaller
    batch reuses it rather than tracing the decoder again (seconds); inputs
    of other dtypes or frame sizes get their own trace."""

    def predict_next(inputs):
        return model.predict_next(inputs, sampler=sampler, return_embeddings=True)

    if keras.config.backend() != "tensorflow" or not isinstance(sampler, str):
        return predict_next
    import tensorflow as tf

    traced = _TRACED_PREDICT_NEXT.setdefault(model, {})
    if sampler not in traced:
        functions = {}  # One trace per input signature.

        def call(inputs):
            key = tuple(sorted((n, v.shape[1:], str(v.dtype)) for n, v in inputs.items()))
            if key not in functions:
                signature = {
                    name: tf.TensorSpec((None, *value.shape[1:]), tf.as_dtype(value.dtype))
                    for name, value in inputs.items()
                }
                functions[key] = tf.function(predict_next, input_signature=[signature])
            return functions[key](inputs)

        traced[sampler] = call
    return traced[sampler]


def story_from_folder(path):
    """A story from a folder of frame images (sorted by name) and `captions.txt`.

    `captions.txt` has one caption per line, one per image. With four images
    and captions the next step is predicted; with five or more the fifth is
    also shown as the truth. Captions may carry grounding tags (`<gdo
    char1>Anna</gdo> waves.`): the tags are stripped and their ids are the
    frame's entities.
    """
    images = sorted(
        f for pattern in _IMAGE_PATTERNS for f in glob.glob(os.path.join(path, pattern))
    )
    captions_path = os.path.join(path, "captions.txt")
    if not os.path.exists(captions_path):
        raise ValueError(f"{path} has no captions.txt (one caption per frame image).")
    with open(captions_path, encoding="utf-8") as file:
        captions = [line.strip() for line in file if line.strip()]
    if len(images) != len(captions):
        raise ValueError(f"{path} has {len(images)} images but {len(captions)} captions.")
    # The readers' checks: a file that does not decode is named, not a traceback.
    for frame, image in enumerate(images):
        with open(image, "rb") as file:
            problem = image_problem(file.read())
        if problem:
            raise ValueError(f"{image} (frame {frame + 1} of {path}): {problem}.")
    # Captions may carry StoryReasoning's grounding tags, for the grounding head.
    entities = tuple(grounded_entity_ids(caption) for caption in captions)
    texts = tuple(strip_grounding_tags(caption) for caption in captions)
    return Story(
        os.path.basename(os.path.normpath(path)),
        tuple(images),
        texts,
        entities if any(entities) else (),
    )


def find_story(config, workdir, story):
    """A story by id (searched in test, validation, train) or by folder path."""
    if os.path.isdir(story):
        return story_from_folder(story)
    splits, _ = load_splits(config.data, os.path.join(workdir, DATA_DIR))
    for split in ("test", "validation", "train"):
        for candidate in splits[split]:
            if candidate.story_id == story:
                return candidate
    raise ValueError(
        f"No story {story!r} in the test, validation or train split, and no such folder."
    )


def predict_context(model, frames, captions, sampler="greedy", entities=None):
    """The next caption and frame after one story's context, as `kstory
    predict` makes them.

    Args:
        model: a `StoryModel` with its preprocessor.
        frames: the `num_context_steps` context frames: encoded bytes, paths
            or RGB arrays, resized as in training.
        captions: their captions, strings.
        sampler: str. The keras-hub sampler for the caption.
        entities: the context frames' entity ids (tuples of str), or None
            when the story has no grounding.

    Returns:
        dict with `caption` (str), `next_image` float32 `(T, T, 3)` in
        [0, 1] and `context_images`, the frames as the model saw them; with a
        grounding head, `entities`: `(ids, new_kinds)` predicted for the next
        frame (`kstory.data.entities.predicted_ids`).
    """
    backbone = model.backbone
    images = [load_frame(frame, backbone.image_size, backbone.image_resize) for frame in frames]
    text = model.preprocessor([list(captions)])
    inputs = {
        "images": np.stack(images)[None],
        "token_ids": text["token_ids"].numpy(),
        "padding_mask": text["padding_mask"].numpy(),
    }
    if backbone.grounding is not None:
        entities = entities or [()] * len(frames)
        context = np.stack([presence(ids, backbone.entity_slots) for ids in entities])
        inputs["context_entities"] = context.astype(np.int32)[None]
    outputs = keras.tree.map_structure(
        keras.ops.convert_to_numpy, predict_next_function(model, sampler)(inputs)
    )
    result = {
        "caption": model.preprocessor.generate_postprocess(outputs["next_token_ids"])[0],
        "next_image": outputs["next_image"][0],
        "context_images": images,
    }
    if backbone.grounding is not None:
        probabilities = entity_probabilities(outputs["entity_logits"][0])
        result["entities"] = predicted_ids(probabilities, context, backbone.entity_slots)
    return result


def predict(workdir, story, start=0, sampler="greedy", output_dir=None, model=None):
    """Predicts the step after frames `start..start+3` of a story.

    Writes `<story>_next.png` and `<story>_storyboard.png` into
    `output_dir` (default: `<workdir>/predictions`).

    Args:
        workdir: str. A trained run's folder.
        story: str or `Story`. A story id of the run's data, a folder (see
            `story_from_folder`), or an already loaded `Story`.
        start: int. Index of the first context frame.
        sampler: str. The keras-hub sampler for the caption.
        output_dir: str. Where the images go.
        model: the workdir's loaded `StoryModel`, to skip reloading it.

    Returns:
        dict with `caption`, `image_path` and `storyboard_path`.
    """
    config = load_workdir_config(workdir)
    data = config.data
    steps = data.num_context_steps
    if not isinstance(story, Story):
        story = find_story(config, workdir, story)
    if story.num_frames < start + steps:
        raise ValueError(
            f"Story {story.story_id!r} has {story.num_frames} frames; frames {start + 1}.."
            f"{start + steps} are needed as context."
        )
    model = model or load_workdir_model(workdir)
    context = slice(start, start + steps)
    predicted = predict_context(
        model,
        story.images[context],
        story.texts[context],
        sampler,
        story.entities[context] if story.entities else None,
    )
    return save_prediction(
        story,
        start,
        data,
        predicted["next_image"],
        predicted["caption"],
        output_dir or os.path.join(workdir, PREDICTIONS_DIR),
        predicted["context_images"],
        predicted.get("entities"),
    )


def save_prediction(
    story,
    start,
    data,
    predicted_image,
    caption,
    output_dir,
    context_images=None,
    predicted_entities=None,
):
    """Writes `<story>_next.png` and `<story>_storyboard.png` of one prediction.

    Args:
        story: `Story`.
        start: int. Index of the first context frame.
        data: the run's `DataConfig`.
        predicted_image: float `(size, size, 3)` in [0, 1].
        caption: str. The predicted caption.
        output_dir: str. Where the images go.
        context_images: the decoded context frames, or None to decode them.
        predicted_entities: `(ids, new_kinds)` from the grounding head, or
            None; listed on the storyboard beside the true entities.

    Returns:
        dict with `caption`, `image_path` and `storyboard_path`, and
        `entities` (the predicted ids) with `predicted_entities`.
    """
    steps = data.num_context_steps
    if context_images is None:
        context_images = [
            load_frame(story.images[start + i], data.image_size, data.image_resize)
            for i in range(steps)
        ]
    has_truth = story.num_frames > start + steps
    os.makedirs(output_dir, exist_ok=True)
    image_path = os.path.join(output_dir, f"{story.story_id}_next.png")
    Image.fromarray((np.clip(predicted_image, 0, 1) * 255).round().astype(np.uint8)).save(
        image_path
    )
    storyboard_path = os.path.join(output_dir, f"{story.story_id}_storyboard.png")
    draw_storyboard(
        context_images,
        list(story.texts[start : start + steps]),
        predicted_image,
        caption,
        (
            load_frame(story.images[start + steps], data.target_image_size, data.image_resize)
            if has_truth
            else None
        ),
        story.texts[start + steps] if has_truth else None,
        path=storyboard_path,
        title=f"story {story.story_id}, frames {start + 1}-{start + steps}",
        predicted_entities=None
        if predicted_entities is None
        else entities_line(*predicted_entities),
        true_entities=story.entities[start + steps] if has_truth and story.entities else None,
    )
    saved = {"caption": caption, "image_path": image_path, "storyboard_path": storyboard_path}
    if predicted_entities is not None:
        saved["entities"] = list(predicted_entities[0])
        saved["new_entity_kinds"] = list(predicted_entities[1])
    return saved
