"""kstory's layers under Keras's own layer test harness.

`keras.src.testing.TestCase.run_layer_test` builds each layer eagerly and
symbolically, checks the declared output shapes against the real ones,
round-trips the config, and, under a `mixed_float16` policy, checks that the
output dtypes are the ones `compute_output_spec` declares (the decoders'
outputs, like keras-hub backbones', are in the compute dtype). Layers with
one input also take a training step; the harness's training model cannot
pass several named inputs, so the others skip that step (their fit steps
are covered by tests/story_model_test.py).
"""

from keras.src.testing import TestCase

from conftest import tiny_distilbert
from kstory.layers.context_memory import ContextMemory
from kstory.layers.image_decoder import ImageDecoder
from kstory.layers.image_preprocessing import ImagePreprocessing
from kstory.layers.step_text_encoder import StepTextEncoder
from kstory.layers.temporal_transformer import TemporalTransformer
from kstory.layers.text_decoder import TextDecoder


class KerasLayerHarnessTest(TestCase):
    def test_image_decoder(self):
        self.run_layer_test(
            ImageDecoder,
            init_kwargs={"image_size": 8, "filters": 16},
            input_shape=(2, 10),
            expected_output_shape=(2, 8, 8, 3),
            expected_num_trainable_weights=6,
        )

    def test_residual_image_decoder(self):
        self.run_layer_test(
            ImageDecoder,
            init_kwargs={"image_size": 8, "filters": 16, "residual": True},
            input_shape={"story_state_shape": (2, 10), "last_frames_shape": (2, 2, 16, 16, 3)},
            input_dtype={"story_state_shape": "float32", "last_frames_shape": "uint8"},
            expected_output_shape=(2, 8, 8, 3),
            run_training_check=False,
        )

    def test_context_memory(self):
        self.run_layer_test(
            ContextMemory,
            init_kwargs={"units": 8, "num_steps": 4},
            input_shape={"sequence_shape": (2, 4, 5, 16), "padding_mask_shape": (2, 4, 5)},
            input_dtype={"sequence_shape": "float32", "padding_mask_shape": "int32"},
            expected_output_shape=((2, 20, 8), (2, 20)),
            expected_output_dtype=("float32", "bool"),
            run_training_check=False,
        )

    def test_temporal_transformer(self):
        self.run_layer_test(
            TemporalTransformer,
            init_kwargs={"units": 16, "num_heads": 2},
            input_shape=(2, 4, 12),
            expected_output_shape=(2, 16),
        )

    def test_text_decoder(self):
        self.run_layer_test(
            TextDecoder,
            init_kwargs={"vocabulary_size": 30, "embedding_dim": 8, "units": 16},
            input_shape={"token_ids_shape": (2, 7), "story_state_shape": (2, 12)},
            input_dtype={"token_ids_shape": "int32", "story_state_shape": "float32"},
            expected_output_shape=(2, 7, 30),
            run_training_check=False,
        )

    def test_image_preprocessing(self):
        self.run_layer_test(
            ImagePreprocessing,
            init_kwargs={"mode": "tf"},
            input_shape=(2, 8, 8, 3),
            input_dtype="uint8",
            expected_output_shape=(2, 8, 8, 3),
            expected_num_trainable_weights=0,
            run_training_check=False,
        )

    def test_step_text_encoder(self):
        self.run_layer_test(
            StepTextEncoder,
            init_kwargs={"backbone": tiny_distilbert(num_layers=1)},
            input_shape={"token_ids_shape": (2, 4, 8), "padding_mask_shape": (2, 4, 8)},
            input_dtype={"token_ids_shape": "int32", "padding_mask_shape": "int32"},
            expected_output_shape=((2, 4, 16), (2, 4, 8, 16)),
            run_training_check=False,
        )
