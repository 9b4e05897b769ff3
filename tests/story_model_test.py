import contextlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_case import TestCase
from test_case import to_numpy

from conftest import build_tiny_model
from kstory.models.story_model import StoryModel

LOSS_TERMS = ("loss", "image_loss", "text_loss", "contrastive_loss")


class TestStoryModel(TestCase):
    def test_output_shapes(self, tiny_preprocessor, tiny_batch):
        model = build_tiny_model(tiny_preprocessor)
        inputs, _ = tiny_batch
        outputs = model.predict(inputs, verbose=0)
        vocabulary_size = tiny_preprocessor.tokenizer.vocabulary_size()
        assert outputs["next_image"].shape == (2, 32, 32, 3)
        assert outputs["next_token_logits"].shape == (2, 48, vocabulary_size)
        assert outputs["image_embeddings"].shape == (2, 4, 16)
        assert outputs["text_embeddings"].shape == (2, 4, 16)
        assert outputs["story_state"].shape == (2, 16)
        assert 0 <= outputs["next_image"].min() and outputs["next_image"].max() <= 1

    def test_config_round_trip(self, tiny_preprocessor):
        model = build_tiny_model(tiny_preprocessor, compile=False, contrastive_loss_weight=0.3)
        restored = self.run_serialization_round_trip(model)
        assert isinstance(restored, StoryModel)
        assert restored.contrastive_loss_weight == 0.3
        assert restored.backbone.get_config() == model.backbone.get_config()

    def test_keras_file_round_trip_after_training(
        self, tiny_preprocessor, tiny_dataset, tiny_batch, tmp_path
    ):
        model = build_tiny_model(tiny_preprocessor)
        self.run_fit_step(model, tiny_dataset.take(2))
        restored = self.run_saved_model_round_trip(model, tiny_batch[0], tmp_path)
        # The preprocessor and its vocabulary come back with the model.
        context = [["the red circle", "moves", "up", "grows"]]
        np.testing.assert_array_equal(
            restored.preprocessor(context, ["the blue square"])["next_token_ids"].numpy(),
            tiny_preprocessor(context, ["the blue square"])["next_token_ids"].numpy(),
        )
        # Frozen parts stay frozen, and the optimizer state is restored.
        assert len(restored.trainable_variables) == len(model.trainable_variables)
        assert restored.optimizer.iterations.numpy() == model.optimizer.iterations.numpy() > 0
        self.run_fit_step(restored, tiny_dataset.take(1))

    def test_frozen_weights_stay_and_trainable_ones_move(self, tiny_preprocessor, tiny_dataset):
        # A real keras.applications encoder here, to check its BatchNorm
        # statistics stay frozen too.
        model = build_tiny_model(tiny_preprocessor, application=True, num_frozen_text_layers=1)
        backbone = model.backbone
        text = backbone.text_encoder.backbone
        frozen = {
            "image encoder": backbone.image_encoder.weights,
            "text embeddings": text.get_layer("token_and_position_embedding").weights,
            "text layer 0": text.get_layer("transformer_layer_0").weights,
        }
        moving = {
            "text layer 1": text.get_layer("transformer_layer_1").weights,
            "image projection": backbone.image_projection.weights,
            "fusion": backbone.fusion_dense.weights,
            "temporal GRU": backbone.temporal.weights,
            "image decoder": backbone.image_decoder.weights,
            "text decoder": backbone.text_decoder.weights,
            "temperature": [model.log_logit_scale],
        }
        before = {
            name: to_numpy([w.value for w in ws]) for name, ws in {**frozen, **moving}.items()
        }
        self.run_fit_step(model, tiny_dataset.take(3))
        for name, weights in frozen.items():
            for old, new in zip(before[name], to_numpy([w.value for w in weights])):
                np.testing.assert_array_equal(old, new, err_msg=name)
        for name, weights in moving.items():
            changed = any(
                not np.array_equal(old, new)
                for old, new in zip(before[name], to_numpy([w.value for w in weights]))
            )
            assert changed, f"{name} did not train"

    def test_each_loss_term_is_logged_and_finite(self, tiny_preprocessor, tiny_dataset):
        model = build_tiny_model(tiny_preprocessor)
        history = self.run_fit_step(model, tiny_dataset.take(2), epochs=2)
        for name in LOSS_TERMS:
            assert name in history.history and len(history.history[name]) == 2
        logs = model.evaluate(tiny_dataset.take(2), verbose=0, return_dict=True)
        assert set(LOSS_TERMS) <= set(logs)

    def test_contrastive_weight_changes_the_total(self, tiny_preprocessor, tiny_batch):
        model = build_tiny_model(tiny_preprocessor, contrastive_loss_weight=0.5)
        inputs, targets = tiny_batch
        with_term = model.evaluate(inputs, targets, verbose=0, return_dict=True)
        model.contrastive_loss_weight = 0.0
        model.compile(optimizer="adam")  # The weight is a constant of the traced step.
        without_term = model.evaluate(inputs, targets, verbose=0, return_dict=True)
        assert with_term["contrastive_loss"] > 0
        np.testing.assert_allclose(
            with_term["loss"] - without_term["loss"], 0.5 * with_term["contrastive_loss"], rtol=1e-4
        )

    def test_text_loss_ignores_padding(self, tiny_preprocessor, tiny_batch):
        model = build_tiny_model(tiny_preprocessor)
        inputs, targets = tiny_batch
        outputs = model(inputs)
        _, text_loss, _ = model.loss_terms(targets, outputs)
        # Changing the logits at padded target positions leaves the loss.
        padded = targets["next_token_ids"] == tiny_preprocessor.tokenizer.pad_token_id
        assert padded.any()
        logits = keras.ops.convert_to_numpy(outputs["next_token_logits"]).copy()
        logits[padded] = 1000.0 * np.random.default_rng(0).normal(size=logits[padded].shape)
        _, changed_loss, _ = model.loss_terms(targets, {**outputs, "next_token_logits": logits})
        np.testing.assert_allclose(float(text_loss), float(changed_loss), rtol=1e-6)

    def test_bag_of_words_loss_against_numpy(self, tiny_preprocessor, tiny_batch):
        model = build_tiny_model(tiny_preprocessor, bag_of_words_loss_weight=0.5)
        inputs, targets = tiny_batch
        outputs = model(inputs)
        loss = float(model.bag_of_words_loss(targets, outputs, inputs))
        kernel, bias = (to_numpy(w.value) for w in model.bag_of_words_head.weights)
        logits = to_numpy(outputs["step_states"]).astype("float64") @ kernel + bias
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        pad = tiny_preprocessor.tokenizer.pad_token_id
        # Step t is scored on the words of caption t + 1: the next context
        # caption, and after the last step the window's target.
        step_targets = [np.asarray(inputs["token_ids"])[:, step] for step in (1, 2, 3)]
        step_targets.append(np.asarray(targets["next_token_ids"]))
        picked = [
            log_probs[row, step, ids[row, col]]
            for step, ids in enumerate(step_targets)
            for row, col in zip(*np.nonzero(ids != pad))
        ]
        np.testing.assert_allclose(loss, -np.mean(picked), rtol=1e-5)
        # One distribution per step: the order of the words does not matter.
        ids = np.asarray(targets["next_token_ids"])
        real = ids != pad
        shuffled = ids.copy()
        for row in range(len(ids)):
            shuffled[row, real[row]] = np.random.default_rng(row).permutation(ids[row, real[row]])
        np.testing.assert_allclose(
            float(
                model.bag_of_words_loss({**targets, "next_token_ids": shuffled}, outputs, inputs)
            ),
            loss,
            rtol=1e-6,
        )

    def test_bag_of_words_term_is_logged_trains_its_head_and_is_saved(
        self, tiny_preprocessor, tiny_dataset, tiny_batch, tmp_path
    ):
        model = build_tiny_model(tiny_preprocessor, bag_of_words_loss_weight=0.5)
        assert build_tiny_model(tiny_preprocessor).bag_of_words_head is None
        inputs, targets = tiny_batch
        logs = model.evaluate(inputs, targets, verbose=0, return_dict=True)
        terms = (
            logs["image_loss"]
            + logs["text_loss"]
            + 0.1 * logs["contrastive_loss"]
            + 0.5 * logs["bag_of_words_loss"]
        )
        np.testing.assert_allclose(logs["loss"], terms, rtol=1e-4)
        before = to_numpy(model.bag_of_words_head.kernel.value)
        self.run_fit_step(model, tiny_dataset.take(2))
        assert not np.array_equal(before, to_numpy(model.bag_of_words_head.kernel.value))
        restored = self.run_saved_model_round_trip(model, inputs, tmp_path)
        assert restored.bag_of_words_loss_weight == 0.5
        np.testing.assert_array_equal(
            to_numpy(restored.bag_of_words_head.kernel.value),
            to_numpy(model.bag_of_words_head.kernel.value),
        )

    def test_temperature_starts_at_0_07_and_is_clipped(self, tiny_preprocessor):
        model = build_tiny_model(tiny_preprocessor, compile=False)
        np.testing.assert_allclose(float(model.logit_scale()), 1 / 0.07, rtol=1e-5)
        model.log_logit_scale.assign(10.0)
        np.testing.assert_allclose(float(model.logit_scale()), 100.0, rtol=1e-5)

    def test_transformer_temporal_model(
        self, tiny_preprocessor, tiny_dataset, tiny_batch, tmp_path
    ):
        model = build_tiny_model(
            tiny_preprocessor, temporal_model="transformer", temporal_num_heads=2
        )
        self.run_fit_step(model, tiny_dataset.take(1))
        assert model.predict(tiny_batch[0], verbose=0)["story_state"].shape == (2, 16)
        self.run_saved_model_round_trip(model, tiny_batch[0], tmp_path)

    @pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
    def test_mixed_precision_step(self, tiny_preprocessor, tiny_dataset, tiny_batch, policy):
        heads = 4
        if policy == "mixed_float16" and keras.config.backend() == "jax":
            # XLA on CPU has no float16 dot_general with float32 accumulation
            # ("F16_F16_F32"), which attention needs; GPUs have it.
            heads = 0
        model = build_tiny_model(
            tiny_preprocessor, dtype_policy=policy, text_decoder_attention_heads=heads
        )
        assert keras.config.dtype_policy().name == "float32"  # restored after building
        self.run_fit_step(model, tiny_dataset.take(2))
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        # The forward pass is in the compute dtype, as keras-hub backbones'
        # outputs are; the loss (finite above) and predictions read float32.
        outputs = model(tiny_batch[0])
        for name in ("next_image", "next_token_logits", "story_state"):
            assert keras.backend.standardize_dtype(outputs[name].dtype) == policy.split("_")[1]
        predicted = model.predict_next(tiny_batch[0])
        assert keras.backend.standardize_dtype(predicted["next_image"].dtype) == "float32"
        image = keras.ops.convert_to_numpy(predicted["next_image"])
        assert np.all((image >= 0) & (image <= 1))

    def test_loss_decreases_on_the_embedded_pipeline(self, tiny_preprocessor, tiny_dataset):
        model = build_tiny_model(tiny_preprocessor)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        history = self.run_fit_step(model, tiny_dataset, epochs=4)
        losses = history.history["loss"]
        assert losses[-1] < losses[0]


class TestGeneration(TestCase):
    def _assert_valid(self, ids, tokenizer, max_length):
        ids = np.asarray(keras.ops.convert_to_numpy(ids))
        assert ids.shape[1] == max_length
        assert (ids[:, 0] == tokenizer.cls_token_id).all()
        assert ((0 <= ids) & (ids < tokenizer.vocabulary_size())).all()
        for row in ids:
            ends = np.flatnonzero(row == tokenizer.sep_token_id)
            if len(ends):
                assert (row[ends[0] + 1 :] == tokenizer.pad_token_id).all()
        return ids

    @pytest.mark.parametrize("sampler", ["greedy", "beam", "top_p"])
    def test_stops_at_sep_and_pads_after(self, tiny_preprocessor, tiny_batch, sampler):
        model = build_tiny_model(tiny_preprocessor, compile=False)
        tokenizer = tiny_preprocessor.tokenizer
        # Make [SEP] likely so that every sampler meets it.
        logits = model.backbone.text_decoder.logits
        bias = keras.ops.convert_to_numpy(logits.bias).copy()
        bias[tokenizer.sep_token_id] = 12.0
        logits.bias.assign(bias)
        ids = self._assert_valid(
            model.generate(tiny_batch[0], sampler=sampler, max_length=10), tokenizer, 10
        )
        assert (ids == tokenizer.sep_token_id).any(axis=1).all()

    def test_beam_scores_at_least_greedy(self, tiny_preprocessor, tiny_batch):
        model = build_tiny_model(tiny_preprocessor, compile=False)
        inputs = tiny_batch[0]
        tokenizer = tiny_preprocessor.tokenizer
        greedy = self._assert_valid(model.generate(inputs, "greedy", max_length=8), tokenizer, 8)
        beam = self._assert_valid(
            model.generate(inputs, keras_hub_beam(num_beams=5), max_length=8), tokenizer, 8
        )
        greedy_score = keras.ops.convert_to_numpy(model.sequence_log_likelihood(inputs, greedy))
        beam_score = keras.ops.convert_to_numpy(model.sequence_log_likelihood(inputs, beam))
        assert (beam_score >= greedy_score - 1e-4).all(), (beam_score, greedy_score)

    def test_greedy_generation_agrees_with_the_teacher_forced_pass(
        self, tiny_preprocessor, tiny_batch
    ):
        # Feeding the generated ids back as decoder input, the teacher-forced
        # logits at position t must pick generated token t + 1: training and
        # generation use the same one-token shift.
        model = build_tiny_model(tiny_preprocessor, compile=False)
        tokenizer = tiny_preprocessor.tokenizer
        logits = model.backbone.text_decoder.logits
        bias = keras.ops.convert_to_numpy(logits.bias).copy()
        bias[tokenizer.sep_token_id] = 3.0  # End within the window, sometimes.
        logits.bias.assign(bias)
        inputs = tiny_batch[0]
        ids = self._assert_valid(model.generate(inputs, max_length=16), tokenizer, 16)
        outputs = model({**inputs, "decoder_token_ids": ids[:, :-1]})
        teacher_forced = keras.ops.convert_to_numpy(outputs["next_token_logits"]).argmax(-1)
        for row, predicted in zip(ids, teacher_forced):
            ends = np.flatnonzero(row == tokenizer.sep_token_id)
            stop = ends[0] if len(ends) else len(row) - 1
            np.testing.assert_array_equal(predicted[:stop], row[1 : stop + 1])

    def test_predict_next_matches_the_forward_pass_and_generate(
        self, tiny_preprocessor, tiny_batch
    ):
        model = build_tiny_model(tiny_preprocessor, compile=False, text_decoder_attention_heads=2)
        inputs = {name: tiny_batch[0][name] for name in ("images", "token_ids", "padding_mask")}
        outputs = to_numpy(model.predict_next(inputs, return_embeddings=True))
        forward = to_numpy(
            model({**inputs, "decoder_token_ids": tiny_batch[0]["decoder_token_ids"]})
        )
        for name in ("next_image", "image_embeddings", "text_embeddings", "story_state"):
            self.assert_allclose(outputs[name], forward[name], atol=1e-6)
        np.testing.assert_array_equal(outputs["next_token_ids"], to_numpy(model.generate(inputs)))
        assert set(model.predict_next(inputs)) == {"next_image", "next_token_ids"}
        # Float 0-255 frames give the same result as uint8 ones.
        float_outputs = to_numpy(
            model.predict_next({**inputs, "images": inputs["images"].astype("float32")})
        )
        self.assert_allclose(float_outputs["next_image"], outputs["next_image"], atol=1e-6)

    def test_single_step_embeddings_match_the_context_step_embeddings(
        self, tiny_preprocessor, tiny_batch
    ):
        model = build_tiny_model(tiny_preprocessor, compile=False)
        inputs = tiny_batch[0]
        forward = to_numpy(model(inputs))
        backbone = model.backbone
        for step in range(inputs["images"].shape[1]):
            self.assert_allclose(
                backbone.embed_images(inputs["images"][:, step]),
                forward["image_embeddings"][:, step],
                atol=1e-5,
            )
            self.assert_allclose(
                backbone.embed_texts(inputs["token_ids"][:, step], inputs["padding_mask"][:, step]),
                forward["text_embeddings"][:, step],
                atol=1e-5,
            )

    def test_save_to_preset_and_from_preset_round_trip(
        self, tiny_preprocessor, tiny_batch, tmp_path
    ):
        # keras-hub's way of sharing a model: a folder with the config, the
        # weights, the preprocessor and the tokenizer's vocabulary.
        model = build_tiny_model(tiny_preprocessor, compile=False, text_decoder_attention_heads=2)
        inputs = {name: tiny_batch[0][name] for name in ("images", "token_ids", "padding_mask")}
        expected = to_numpy(model.predict_next(inputs))
        preset = str(tmp_path / "preset")
        model.save_to_preset(preset)
        restored = StoryModel.from_preset(preset)
        assert isinstance(restored, StoryModel) and restored.preprocessor is not None
        outputs = to_numpy(restored.predict_next(inputs))
        self.assert_allclose(outputs["next_image"], expected["next_image"], atol=1e-6)
        np.testing.assert_array_equal(outputs["next_token_ids"], expected["next_token_ids"])

    def test_keras_file_loads_with_its_optimizer_on_another_backend(
        self, tiny_preprocessor, tiny_dataset, tiny_batch, tmp_path
    ):
        # A .keras file stores optimizer slots by position, in an order that
        # differs between backends; the model restores them by name.
        model = build_tiny_model(tiny_preprocessor, text_decoder_attention_heads=2)
        model.fit(tiny_dataset.take(2), epochs=1, verbose=0)
        path = str(tmp_path / "model.keras")
        model.save(path)
        inputs = {name: tiny_batch[0][name] for name in ("images", "token_ids", "padding_mask")}
        np.savez(tmp_path / "inputs.npz", **inputs)
        script = tmp_path / "load_and_predict.py"
        script.write_text(LOAD_AND_PREDICT)
        others = {"tensorflow": "torch", "jax": "tensorflow", "torch": "jax"}
        result = subprocess.run(
            [sys.executable, str(script), path, str(tmp_path)],
            env=dict(os.environ, KERAS_BACKEND=others[keras.config.backend()]),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        loaded = np.load(tmp_path / "outputs.npz")
        assert int(loaded["iterations"]) == int(
            keras.ops.convert_to_numpy(model.optimizer.iterations)
        )
        slots = sorted(model.optimizer.variables, key=lambda v: v.path)
        np.testing.assert_allclose(
            loaded["slot_norm"], sum(float(np.abs(to_numpy(v)).sum()) for v in slots), rtol=1e-4
        )
        expected = to_numpy(model.predict_next(inputs))
        self.assert_allclose(loaded["next_image"], expected["next_image"], atol=1e-5)
        np.testing.assert_array_equal(loaded["next_token_ids"], expected["next_token_ids"])


LOAD_AND_PREDICT = """
import sys

import keras
import numpy as np

import kstory

model = keras.saving.load_model(sys.argv[1])  # With its optimizer.
inputs = dict(np.load(sys.argv[2] + "/inputs.npz"))
outputs = keras.tree.map_structure(keras.ops.convert_to_numpy, model.predict_next(inputs))
slots = sorted(model.optimizer.variables, key=lambda v: v.path)
np.savez(
    sys.argv[2] + "/outputs.npz",
    iterations=keras.ops.convert_to_numpy(model.optimizer.iterations),
    slot_norm=sum(float(np.abs(keras.ops.convert_to_numpy(v)).sum()) for v in slots),
    **outputs,
)
"""


def keras_hub_beam(num_beams):
    import keras_hub

    return keras_hub.samplers.BeamSampler(num_beams=num_beams)


# What each output reads, tested on the mechanism: a smoke run is too short to
# learn it (the claims check, on `make demo`'s run, covers the learning). With
# an encoder's output zeroed, the other context must not move the output at
# all; with it restored, it must. A model built to ignore the modality
# (`model.modalities`) is the broken version these checks tell apart.


@contextlib.contextmanager
def _output_zeroed(backbone, name):
    """Replaces `backbone.<name>` (an encoder) by one returning zeros of the
    same structure, for the eager paths (`encode`, `predict_next`)."""
    encoder = getattr(backbone, name)
    had_attribute = name in vars(backbone)

    def zeroed(*args, **kwargs):
        return keras.tree.map_structure(keras.ops.zeros_like, encoder(*args, **kwargs))

    object.__setattr__(backbone, name, zeroed)
    try:
        yield
    finally:
        if had_attribute:
            object.__setattr__(backbone, name, encoder)
        else:
            del vars(backbone)[name]


def _context(batch, swap=None):
    """The context steps of `batch`, with one modality's rows swapped between
    the batch's two windows (as `shuffle_context` does): `"images"` or
    `"captions"`."""
    inputs = {name: batch[name] for name in ("images", "token_ids", "padding_mask")}
    swapped = {"images": ("images",), "captions": ("token_ids", "padding_mask")}.get(swap, ())
    return {name: value[::-1] if name in swapped else value for name, value in inputs.items()}


def _caption_logits(model, inputs, caption_ids):
    """The text decoder's logits for `caption_ids` on `inputs`, step by step as
    generation reads them (the eager `encode`, then the decoder)."""
    backbone = model.backbone
    steps = {name: keras.ops.convert_to_tensor(value) for name, value in inputs.items()}
    encoded = backbone.encode(steps)
    logits = backbone.text_decoder(
        keras.ops.convert_to_tensor(caption_ids[:, :-1]),
        encoded["story_state"],
        encoded.get("memory"),
        encoded.get("memory_mask"),
    )
    return keras.ops.convert_to_numpy(logits)


def _caption_change_with_images_swapped(model, batch):
    ids = keras.ops.convert_to_numpy(model.generate(_context(batch), max_length=12))
    as_is = _caption_logits(model, _context(batch), ids)
    swapped = _caption_logits(model, _context(batch, "images"), ids)
    return np.abs(as_is - swapped).max()


def _next_image_change_with_captions_swapped(model, batch):
    # An untrained residual decoder copies the last frame whatever it reads:
    # its output layer and its FiLM modulation start at zero. Give them weights.
    decoder, rng = model.backbone.image_decoder, np.random.default_rng(2)
    for kernel in (decoder.to_rgb.kernel, decoder.modulation.kernel):
        kernel.assign(rng.normal(0, 0.3, kernel.shape).astype("float32"))
    as_is = model.predict_next(_context(batch), max_length=12)["next_image"]
    swapped = model.predict_next(_context(batch, "captions"), max_length=12)["next_image"]
    return np.abs(keras.ops.convert_to_numpy(as_is) - keras.ops.convert_to_numpy(swapped)).max()


def test_the_caption_reads_the_images_through_the_image_encoder(tiny_preprocessor, tiny_batch):
    model = build_tiny_model(tiny_preprocessor, compile=False)
    with _output_zeroed(model.backbone, "image_encoder"):
        assert _caption_change_with_images_swapped(model, tiny_batch[0]) == 0
    assert _caption_change_with_images_swapped(model, tiny_batch[0]) > 1e-4


def test_the_next_image_reads_the_captions_through_the_text_encoder(tiny_preprocessor, tiny_batch):
    model = build_tiny_model(tiny_preprocessor, compile=False)
    with _output_zeroed(model.backbone, "text_encoder"):
        assert _next_image_change_with_captions_swapped(model, tiny_batch[0]) == 0
    assert _next_image_change_with_captions_swapped(model, tiny_batch[0]) > 1e-3


@pytest.mark.parametrize(
    "overrides, change",
    [
        (
            {"modalities": "captions", "image_decoder_residual": False},
            _caption_change_with_images_swapped,
        ),
        ({"modalities": "images"}, _next_image_change_with_captions_swapped),
    ],
    ids=["captions only", "images only"],
)
def test_a_model_that_ignores_the_modality_fails_those_checks(
    tiny_preprocessor, tiny_batch, overrides, change
):
    model = build_tiny_model(tiny_preprocessor, compile=False, **overrides)
    assert change(model, tiny_batch[0]) < 1e-6
