"""What `kstory demo` computes, without the page: stories, predictions, neighbours.

`DemoEngine` reads a trained run (its config, data and model, or its
SavedModel export) and never writes into it.
"""

import logging
import os

import numpy as np
from PIL import Image

from kstory.data.entities import entities_line
from kstory.data.image_check import image_problem
from kstory.data.pipeline import load_frame
from kstory.data.sources import load_splits
from kstory.data.story_parser import grounded_entity_ids
from kstory.data.story_parser import strip_grounding_tags
from kstory.evaluation.storyboard import draw_storyboard
from kstory.workdir import DATA_DIR
from kstory.workdir import load_workdir_config

logger = logging.getLogger("kstory.demo")

SAMPLERS = ("greedy", "beam", "top_p")
# Upload limits, stated on the page.
MAX_UPLOAD_MB = 8
MAX_SIDE = 4096


class UploadError(ValueError):
    """Bad input from the page; its message is shown to the user as is."""


def upload_problem(path, max_mb=MAX_UPLOAD_MB, max_side=MAX_SIDE):
    """Why an uploaded frame cannot be used, or None.

    The size limits are checked before the image is decoded: a huge file or
    a decompression bomb is refused from its header.

    Example:
    >>> upload_problem(__file__)
    'demo_engine.py is not an image (PNG, JPEG, GIF, BMP or WEBP)'
    """
    name = os.path.basename(path)
    megabytes = os.path.getsize(path) / 2**20
    if megabytes > max_mb:
        return f"{name} is {megabytes:.1f} MB; the limit is {max_mb} MB"
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return f"{name} has too many pixels; the limit is {max_side} on a side"
    except Exception:  # PIL raises many types for what is not an image.
        return f"{name} is not an image (PNG, JPEG, GIF, BMP or WEBP)"
    if max(width, height) > max_side:
        return f"{name} is {width}x{height} pixels; the limit is {max_side} on a side"
    problem = image_problem(path)
    return problem and f"{name}: {problem}"


def check_story_inputs(frames, captions, num_steps):
    """Raises `UploadError` naming the first bad frame or caption.

    Args:
        frames: file paths of the uploaded frames, None for an empty slot.
        captions: the typed captions.
        num_steps: how many of each the model takes.
    """
    given = [frame for frame in frames if frame]
    if len(given) < num_steps:
        raise UploadError(
            f"Upload {num_steps} frames; {len(given)} given. Pick a story from the gallery "
            "or add a frame to every slot."
        )
    for index, caption in enumerate(captions):
        if not (caption or "").strip():
            raise UploadError(f"Caption {index + 1} is empty; type one caption for every frame.")
    for index, frame in enumerate(frames):
        problem = upload_problem(frame)
        if problem:
            raise UploadError(f"Frame {index + 1}: {problem}.")


def _unit_rows(vectors):
    vectors = np.asarray(vectors, np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _to_uint8(image):
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


class KerasPredictor:
    """Predicts with the run's Keras model (`model.keras`), any sampler."""

    samplers = SAMPLERS

    def __init__(self, workdir):
        from kstory.workdir import load_workdir_model

        self.model = load_workdir_model(workdir)
        self.description = f"the Keras model of {workdir}"

    def predict(self, frames, captions, sampler, entities=None):
        """`(caption, next frame uint8, predicted entities line or None)`."""
        from kstory.evaluation.predict import predict_context

        predicted = predict_context(self.model, frames, captions, sampler, entities)
        line = entities_line(*predicted["entities"]) if "entities" in predicted else None
        return predicted["caption"], _to_uint8(predicted["next_image"]), line

    def embed_images(self, images):
        from keras import ops

        return ops.convert_to_numpy(self.model.backbone.embed_images(images))

    def embed_texts(self, captions):
        import tensorflow as tf
        from keras import ops

        # A tensor, not a list: one trace for every batch of captions.
        text = self.model.preprocessor(tf.constant(list(captions)))
        return ops.convert_to_numpy(
            self.model.backbone.embed_texts(text["token_ids"], text["padding_mask"])
        )


class ExportPredictor:
    """Predicts with a SavedModel export (`serving_default`: greedy captions)."""

    samplers = ("greedy",)

    def __init__(self, export_dir):
        from kstory.serving.saved_story_model import SavedStoryModel

        self.served = SavedStoryModel(export_dir)
        self.description = f"the SavedModel {export_dir} (greedy decoding)"

    def predict(self, frames, captions, sampler, entities=None):
        """`(caption, next frame uint8, predicted entities line or None)`."""
        result = self.served.predict(list(frames), list(captions), entities)
        line = result["entities"][0] if "entities" in result else None
        return result["captions"][0], result["next_images"][0], line

    def embed_images(self, images):
        return self.served.embed_images(list(images))

    def embed_texts(self, captions):
        return self.served.embed_texts(list(captions))


def _read_run(workdir):
    """A run's splits and `DataConfig`, read without writing into the run."""
    if not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir} is not a folder.")
    data = load_workdir_config(workdir).data
    data_dir = os.path.join(workdir, DATA_DIR)
    if data.source == "embedded" and not os.path.isdir(data_dir):
        # load_splits would write the embedded stories there.
        raise ValueError(f"{workdir} has no {DATA_DIR}/ folder; is it a trained run?")
    return load_splits(data, data_dir)[0], data


def _held_out(splits, num_steps, num_stories):
    return [story for story in splits["test"] if story.num_frames > num_steps][:num_stories]


def _training_captions(splits):
    return [text for story in splits["train"] for text in story.texts]


class DemoEngine:
    """The held-out stories of a run, its predictor, and its training captions
    indexed by the contrastive text embedding.

    Args:
        workdir: str. A trained run's folder.
        export_dir: str or None. Predict with this SavedModel export instead of
            the run's Keras model.
        num_stories: int. Held-out stories offered in the gallery.
        batch_size: int. Captions embedded per call when indexing.
    """

    def __init__(self, workdir, export_dir=None, num_stories=24, batch_size=256):
        splits, self.data = _read_run(workdir)
        self.num_steps = self.data.num_context_steps
        self.stories = _held_out(splits, self.num_steps, num_stories)
        if export_dir is not None:
            self.predictor = ExportPredictor(export_dir)
        else:
            self.predictor = KerasPredictor(workdir)
        captions = sorted(set(_training_captions(splits)))
        logger.info("Embedding %d distinct training captions for the neighbours.", len(captions))
        vectors = [
            self.predictor.embed_texts(captions[i : i + batch_size])
            for i in range(0, len(captions), batch_size)
        ]
        self.captions = captions
        self.caption_vectors = _unit_rows(np.concatenate(vectors))

    @staticmethod
    def held_out_stories(workdir, num_stories=24):
        """The first test stories of a run with a frame after the context."""
        splits, data = _read_run(workdir)
        return _held_out(splits, data.num_context_steps, num_stories)

    @staticmethod
    def training_captions(workdir):
        """Every caption of a run's training split, in order."""
        return _training_captions(_read_run(workdir)[0])

    def story(self, index):
        """Context frames (encoded), captions, and the true next frame and caption."""
        story = self.stories[index]
        steps = self.num_steps
        return {
            "story_id": story.story_id,
            "frames": list(story.images[:steps]),
            "captions": list(story.texts[:steps]),
            "true_frame": story.images[steps],
            "true_caption": story.texts[steps],
            "entities": [list(ids) for ids in story.entities[:steps]] if story.entities else None,
            "true_entities": list(story.entities[steps]) if story.entities else None,
        }

    def nearest_captions(self, image, k=5):
        """Training captions nearest to a frame, by contrastive cosine similarity."""
        frame = load_frame(_to_uint8(image), self.data.image_size, self.data.image_resize)
        query = _unit_rows(self.predictor.embed_images(frame[None]))[0]
        similarity = self.caption_vectors @ query
        order = np.argsort(-similarity, kind="stable")[:k]
        return [(self.captions[i], float(similarity[i])) for i in order]

    def predict(self, frames, captions, sampler="greedy", truth=None, entities=None):
        """The page's outputs for one context.

        Args:
            frames: `num_steps` frames: encoded bytes or file paths.
            captions: `num_steps` strings. A caption of one's own may carry
                grounding tags (`<gdo obj1>the red circle</gdo> falls`): they
                are stripped, and their ids are the frame's entities.
            sampler: one of the predictor's `samplers`.
            truth: `(frame, caption)` or `(frame, caption, entity ids)` of
                the true next step, or None.
            entities: each context frame's entity ids (a held-out story's),
                or None to read them from the captions' tags.

        Returns:
            dict with `caption`, `next_image` (uint8, the run's target size),
            `true_image` (or None), `storyboard` (`PIL.Image`), `nearest`
            (list of `(caption, cosine)`) and `entities`, the line of
            predicted ids (None for a model without a grounding head).
        """
        if sampler not in self.predictor.samplers:
            raise UploadError(
                f"Sampler {sampler!r} is not one of {', '.join(self.predictor.samplers)}."
            )
        if entities is None:
            entities = [list(grounded_entity_ids(caption)) for caption in captions]
            captions = [strip_grounding_tags(caption) for caption in captions]
        caption, next_image, line = self.predictor.predict(frames, captions, sampler, entities)
        size, resize = self.data.target_image_size, self.data.image_resize
        true_image = load_frame(truth[0], size, resize) if truth else None
        true_entities = truth[2] if truth and len(truth) > 2 else None
        storyboard = draw_storyboard(
            [load_frame(frame, self.data.image_size, resize) for frame in frames],
            list(captions),
            next_image.astype(np.float32) / 255,
            caption,
            true_image,
            truth[1] if truth else None,
            predicted_entities=line,
            true_entities=true_entities,
        )
        return {
            "caption": caption,
            "next_image": next_image,
            "true_image": true_image,
            "storyboard": storyboard,
            "nearest": self.nearest_captions(next_image),
            "entities": line,
        }
