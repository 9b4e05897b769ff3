import keras
import numpy as np
import tensorflow as tf

from kstory.data.story_text_preprocessor import StoryTextPreprocessor

CONTEXT = [["the red circle", "the blue square", "grows", "moves left"]] * 2
NEXT = ["the red circle moves left", "the blue square"]


def _preprocessor(tokenizer):
    return StoryTextPreprocessor(tokenizer, sequence_length=8, decoder_sequence_length=6)


def test_shapes_and_special_tokens(learned_tokenizer):
    outputs = _preprocessor(learned_tokenizer)(CONTEXT, NEXT)
    assert outputs["token_ids"].shape == (2, 4, 8)
    assert outputs["padding_mask"].shape == (2, 4, 8)
    assert outputs["decoder_token_ids"].shape == (2, 6)
    assert outputs["next_token_ids"].shape == (2, 6)
    token_ids = outputs["token_ids"].numpy()
    assert (token_ids[..., 0] == learned_tokenizer.cls_token_id).all()
    mask = outputs["padding_mask"].numpy()
    assert (token_ids[~mask] == learned_tokenizer.pad_token_id).all()
    assert (token_ids[mask] != learned_tokenizer.pad_token_id).all()


def test_decoder_target_is_the_input_shifted_by_one(learned_tokenizer):
    outputs = _preprocessor(learned_tokenizer)(CONTEXT, NEXT)
    decoder_input = outputs["decoder_token_ids"].numpy()
    target = outputs["next_token_ids"].numpy()
    np.testing.assert_array_equal(decoder_input[:, 1:], target[:, :-1])
    assert (decoder_input[:, 0] == learned_tokenizer.cls_token_id).all()
    # "the blue square" fits: [CLS] the blue square [SEP] pad; the target
    # ends the caption with [SEP] then pads.
    expected = learned_tokenizer("the blue square").tolist() + [learned_tokenizer.sep_token_id]
    assert target[1, :4].tolist() == expected
    assert (target[1, 4:] == learned_tokenizer.pad_token_id).all()


def test_long_caption_is_truncated_but_keeps_its_end_token(learned_tokenizer):
    outputs = _preprocessor(learned_tokenizer)(CONTEXT, NEXT)
    assert outputs["next_token_ids"].numpy()[0, -1] == learned_tokenizer.sep_token_id


def test_same_result_eagerly_and_inside_dataset_map(learned_tokenizer):
    preprocessor = _preprocessor(learned_tokenizer)
    eager = preprocessor(CONTEXT, NEXT)
    dataset = tf.data.Dataset.from_tensor_slices((CONTEXT, NEXT)).batch(2)
    mapped = next(iter(dataset.map(lambda c, n: preprocessor(c, n))))
    for name in eager:
        np.testing.assert_array_equal(eager[name].numpy(), mapped[name].numpy())


def test_serialization_round_trip_with_vocabulary_asset(learned_tokenizer, tmp_path):
    # The way a .keras file stores it: the config, then the tokenizer's
    # vocabulary as an asset loaded into the rebuilt layer.
    preprocessor = _preprocessor(learned_tokenizer)
    config = keras.saving.serialize_keras_object(preprocessor)
    preprocessor.tokenizer.save_assets(str(tmp_path))
    reloaded = keras.saving.deserialize_keras_object(config)
    assert isinstance(reloaded, StoryTextPreprocessor)
    assert reloaded.get_config() == preprocessor.get_config()
    reloaded.tokenizer.load_assets(str(tmp_path))
    for name, value in preprocessor(CONTEXT, NEXT).items():
        np.testing.assert_array_equal(reloaded(CONTEXT, NEXT)[name].numpy(), value.numpy())


def test_generate_postprocess_inverts_the_decoder_target(learned_tokenizer):
    # The target ids of each caption are what generation returns: the words,
    # then [SEP], then padding. Decoding them gives the caption back, and
    # stops at the first [SEP] whatever follows it.
    preprocessor = _preprocessor(learned_tokenizer)
    target = preprocessor(CONTEXT, NEXT)["next_token_ids"].numpy()
    generated = np.concatenate([np.full((2, 1), learned_tokenizer.cls_token_id), target], axis=1)
    assert preprocessor.generate_postprocess(generated) == NEXT
    after_sep = generated.copy()
    after_sep[1, 5:] = learned_tokenizer("moves left").tolist()[0]
    assert preprocessor.generate_postprocess(after_sep)[1] == "the blue square"
    only_sep = np.array([[learned_tokenizer.cls_token_id, learned_tokenizer.sep_token_id]])
    assert preprocessor.generate_postprocess(only_sep) == [""]
