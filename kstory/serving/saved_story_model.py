"""A SavedModel export of a story model, served from raw frames and captions."""

import numpy as np

from kstory.data.pipeline import frame_array
from kstory.data.pipeline import read_image
from kstory.serving.story_serving_preprocessor import StoryServingPreprocessor
from kstory.serving.story_serving_preprocessor import entities_batch
from kstory.serving.story_serving_preprocessor import stories_batch


def _encoded(frame):
    """A frame as encoded bytes: bytes and paths as they are, arrays as PNG."""
    if isinstance(frame, (bytes, bytearray, str)) or hasattr(frame, "__fspath__"):
        return read_image(frame)
    import tensorflow as tf

    array = frame_array(frame)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    return tf.io.encode_png(array).numpy()


class SavedStoryModel:
    """Loads a `kstory export` SavedModel and serves it from raw inputs.

    Needs TensorFlow and tensorflow-text, not the Keras backend that trained
    the model: `predict` sends encoded frames and caption strings to the
    export's `serving_default` signature, which decodes, tokenises, generates
    and detokenises in the graph.

    Args:
        export_dir: str. The SavedModel folder.

    Example:
    ```python
    served = SavedStoryModel("runs/tiny/export/tf_saved_model")
    result = served.predict(["1.png", "2.png", "3.png", "4.png"],
                            ["A ball ...", "...", "...", "..."])
    result["captions"][0], result["next_images"].shape
    # ('The ball bounces.', (1, 32, 32, 3))
    ```
    """

    def __init__(self, export_dir):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokeniser's ops)

        self.export_dir = export_dir
        self.saved_model = tf.saved_model.load(export_dir)
        raw_inputs = self.saved_model.signatures["serving_default"].structured_input_signature
        self.num_context_steps = raw_inputs[1]["images"].shape[1]
        self.grounding = "entities" in raw_inputs[1]
        self._preprocessor = None

    @property
    def preprocessor(self):
        """The `StoryServingPreprocessor` of the tensor signatures."""
        if self._preprocessor is None:
            self._preprocessor = StoryServingPreprocessor(self.export_dir)
        return self._preprocessor

    def serve(self, inputs):
        """Runs `serve_tensors` on prepared inputs; numpy outputs.

        Inputs of a wrong shape or dtype raise a `ValueError` naming the input
        and what the export takes (see `StoryServingPreprocessor.check_inputs`).
        """
        inputs = self.preprocessor.check_inputs(inputs)
        outputs = self.saved_model.signatures["serve_tensors"](**inputs)
        return {name: value.numpy() for name, value in outputs.items()}

    def predict(self, frames, captions, entities=None):
        """Predicts the next frame and caption of one story or a batch.

        Args:
            frames: `num_context_steps` frames of one story, or a list of such
                lists for a batch. A frame is encoded bytes, a path or an RGB
                array (uint8, or floats in 0-255, rounded).
            captions: the matching captions: `num_context_steps` strings, or a
                list of such lists.
            entities: with a grounding head, each context frame's entity ids
                (a list of ids per frame, per story), or None when unknown.

        Returns:
            dict with `captions` (list of str), `next_images` uint8
            `(batch, T, T, 3)` and `next_images_png` (list of PNG bytes);
            with a grounding head, `entities` (one line of predicted ids per
            story) and `entity_probabilities`.
        """
        frames, captions = stories_batch(frames, captions, self.num_context_steps)
        inputs = {
            "images": np.array([[_encoded(frame) for frame in story] for story in frames], object),
            "captions": np.array(captions, object),
        }
        if self.grounding:
            entities = entities_batch(entities, len(captions), self.num_context_steps)
            inputs["entities"] = np.array(
                [[" ".join(frame) for frame in story] for story in entities], object
            )
        outputs = self.saved_model.signatures["serving_default"](**inputs)
        result = {
            "captions": [caption.decode("utf-8") for caption in outputs["caption"].numpy()],
            "next_images": outputs["next_image"].numpy(),
            "next_images_png": list(outputs["next_image_png"].numpy()),
        }
        if self.grounding:
            result["entities"] = [line.decode("utf-8") for line in outputs["entities"].numpy()]
            result["entity_probabilities"] = outputs["entity_probabilities"].numpy()
        return result

    def embed_images(self, frames):
        """Frames -> image embeddings `(len(frames), embedding_dim)`."""
        images = self.preprocessor.prepare_images(frames)
        outputs = self.saved_model.signatures["embed_images"](images=images)
        return outputs["image_embedding"].numpy()

    def embed_texts(self, captions):
        """Captions -> text embeddings `(len(captions), embedding_dim)`."""
        inputs = self.preprocessor.prepare_texts(captions)
        return self.saved_model.signatures["embed_texts"](**inputs)["text_embedding"].numpy()
