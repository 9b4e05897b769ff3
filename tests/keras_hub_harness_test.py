"""kstory's backbone and task under keras-hub's own test harness.

`keras_hub.src.tests.test_case.TestCase` (it needs the `grain` package):
- `run_backbone_test`: config and serialisation round trips (JSON-equal
  configs, the same attributes), an eager call, `predict` on arrays and on a
  `tf.data` dataset, the name, every float output and sublayer in the compute
  dtype under `mixed_float16`, `mixed_bfloat16` and `bfloat16` (keras-hub
  skips this on a torch CPU), and int8 / float8 quantisation of the dense
  layers;
- `run_model_saving_test`: a `.keras` file reloads to the same class and the
  same outputs;
- for `StoryModel`, the task checks that apply: the round trips, saving, and
  `predict` agreeing on arrays and on a dataset. (keras-hub's
  `run_task_test` also maps raw samples through `task.preprocessor`; kstory's
  tf.data pipeline tokenises instead, see `StoryModel`.)
"""

import keras
import numpy as np
import tensorflow as tf
from keras_hub.src.tests import test_case

from conftest import tiny_distilbert
from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.data.tokenizer_loading import load_tokenizer
from kstory.models.story_backbone import StoryBackbone
from kstory.models.story_model import StoryModel


@keras.saving.register_keras_serializable(package="kstory_tests")
class TinyImageEncoder(keras.layers.Layer):
    """A two-convolution CNN whose sublayers follow its dtype policy.

    keras-hub's precision check rebuilds each layer argument from its config
    with a new policy; a functional model's inner layers would keep theirs.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.convolutions = [
            keras.layers.Conv2D(
                filters, 3, strides=2, activation="relu", dtype=self.dtype_policy, name=name
            )
            for filters, name in ((8, "conv_1"), (16, "conv_2"))
        ]
        self.pool = keras.layers.GlobalAveragePooling2D(dtype=self.dtype_policy, name="pool")

    def build(self, input_shape):
        for layer in self.convolutions:
            layer.build(input_shape)
            input_shape = layer.compute_output_shape(input_shape)

    def call(self, images):
        for layer in self.convolutions:
            images = layer(images)
        return self.pool(images)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 16)

    def get_config(self):
        # Explicit: the automatic config cannot hold a `DTypePolicyMap`.
        return super().get_config()


def backbone_kwargs(vocabulary_size=50):
    return {
        "image_encoder": TinyImageEncoder(),
        "text_backbone": tiny_distilbert(),
        "vocabulary_size": vocabulary_size,
        "image_size": 32,
        "target_image_size": 16,
        "sequence_length": 8,
        "embedding_dim": 16,
        "fusion_dim": 16,
        "temporal_units": 16,
        "decoder_filters": 16,
        "decoder_refinement_filters": 8,
        "text_decoder_embedding_dim": 8,
        "text_decoder_units": 16,
    }


def inputs(batch=2, vocabulary_size=50):
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, (batch, 4, 32, 32, 3)).astype("uint8"),
        "token_ids": rng.integers(5, vocabulary_size, (batch, 4, 8)).astype("int32"),
        "padding_mask": np.ones((batch, 4, 8), "int32"),
        "decoder_token_ids": rng.integers(5, vocabulary_size, (batch, 5)).astype("int32"),
    }


class StoryBackboneHarnessTest(test_case.TestCase):
    test_session = None  # tf.test.TestCase's helper, not a test.

    def test_backbone(self):
        self.run_backbone_test(
            cls=StoryBackbone,
            init_kwargs=backbone_kwargs(),
            input_data=inputs(),
            # The decoders' outputs; story_backbone_test checks every output.
            expected_output_shape={"next_image": (2, 16, 16, 3), "next_token_logits": (2, 5, 50)},
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=StoryBackbone, init_kwargs=backbone_kwargs(), input_data=inputs()
        )


def story_model_kwargs():
    words = "the a fox dog runs sits red blue box ball park rain sun".split()
    tokenizer = load_tokenizer("learned", [" ".join(words)] * 4, vocabulary_size=40)
    preprocessor = StoryTextPreprocessor(tokenizer, sequence_length=8, decoder_sequence_length=5)
    vocabulary_size = int(tokenizer.vocabulary_size())
    backbone = StoryBackbone(**backbone_kwargs(vocabulary_size))
    return {"backbone": backbone, "preprocessor": preprocessor}, vocabulary_size


class StoryModelHarnessTest(test_case.TestCase):
    test_session = None

    def test_task_checks(self):
        init_kwargs, vocabulary_size = story_model_kwargs()
        model = StoryModel(**init_kwargs)
        self.run_serialization_test(model)
        data = inputs(batch=4, vocabulary_size=vocabulary_size)
        output = model.predict(data, verbose=0)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(2)
        self.assertAllClose(output, model.predict(dataset, verbose=0))
        self.assertEqual(output["next_token_logits"].shape, (4, 5, vocabulary_size))

    def test_saved_model(self):
        init_kwargs, vocabulary_size = story_model_kwargs()
        self.run_model_saving_test(
            cls=StoryModel,
            init_kwargs=init_kwargs,
            input_data=inputs(vocabulary_size=vocabulary_size),
        )
