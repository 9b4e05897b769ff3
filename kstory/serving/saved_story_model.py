"""A SavedModel export of a story model, served from raw frames and captions."""

import numpy as np

from kstory.serving.story_serving_preprocessor import StoryServingPreprocessor


class SavedStoryModel:
    """Loads a `kstory export` SavedModel and serves it from raw inputs.

    Needs TensorFlow (and keras-hub for the tokenizer), not the Keras backend
    that trained the model.

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

        self.preprocessor = StoryServingPreprocessor(export_dir)
        self.saved_model = tf.saved_model.load(export_dir)

    def serve(self, inputs):
        """Runs the `serve` signature on prepared inputs; numpy outputs.

        Inputs of a wrong shape or dtype raise a `ValueError` naming the input
        and what the export takes (see `StoryServingPreprocessor.check_inputs`);
        float images go to the `serve_float` signature.
        """
        inputs = self.preprocessor.check_inputs(inputs)
        uint8 = inputs["images"].dtype == np.uint8
        signature = self.saved_model.serve if uint8 else self.saved_model.serve_float
        outputs = signature(inputs)
        return {name: value.numpy() for name, value in outputs.items()}

    def predict(self, frames, captions):
        """Predicts the next frame and caption of one story or a batch.

        Args:
            frames, captions: as for `StoryServingPreprocessor.prepare`.

        Returns:
            dict with `captions` (list of str), `next_images` float32
            `(batch, size, size, 3)` in [0, 1] and `next_token_ids`.
        """
        outputs = self.serve(self.preprocessor.prepare(frames, captions))
        return {
            "captions": self.preprocessor.decode(outputs["next_token_ids"]),
            "next_images": outputs["next_image"],
            "next_token_ids": outputs["next_token_ids"],
        }

    def embed_images(self, frames):
        """Frames -> image embeddings `(len(frames), embedding_dim)`."""
        images = self.preprocessor.prepare_images(frames)
        return self.saved_model.embed_images({"images": images})["image_embedding"].numpy()

    def embed_texts(self, captions):
        """Captions -> text embeddings `(len(captions), embedding_dim)`."""
        inputs = self.preprocessor.prepare_texts(captions)
        return self.saved_model.embed_texts(inputs)["text_embedding"].numpy()
