"""Tokenises context captions and the next caption for the story model."""

import keras
import keras_hub
import numpy as np


@keras.saving.register_keras_serializable(package="kstory")
class StoryTextPreprocessor(keras_hub.models.Preprocessor):
    """Turns the context captions and the next caption into token ids.

    Context captions become `[CLS] ... [SEP]` sequences padded to
    `sequence_length`, with a padding mask, the input of the text encoder.
    The next caption becomes `[CLS] ... [SEP]` padded to
    `decoder_sequence_length + 1` and is split into the decoder input (all but
    the last token) and the decoder target (all but the first): the target at
    position t is the token after the input at position t.

    Works eagerly and inside `tf.data.Dataset.map` under every Keras backend;
    its outputs are TensorFlow tensors, as for keras-hub preprocessors.

    Args:
        tokenizer: a keras-hub BERT-family tokenizer (`DistilBertTokenizer`,
            `BertTokenizer`) with `cls_token_id`, `sep_token_id` and
            `pad_token_id`.
        sequence_length: int. Length of each context caption's token ids.
        decoder_sequence_length: int. Length of the decoder input and target.

    Example:
    ```python
    preprocessor = StoryTextPreprocessor(tokenizer, 16, 16)
    preprocessor(
        [["frame one", "two", "three", "four"]], ["frame five"])
    # {'token_ids': <(1, 4, 16)>, 'padding_mask': <(1, 4, 16)>,
    # 'decoder_token_ids': <(1, 16)>, 'next_token_ids': <(1, 16)>}
    ```
    """

    def __init__(self, tokenizer, sequence_length=32, decoder_sequence_length=32, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.decoder_sequence_length = decoder_sequence_length
        self.context_packer = None
        self.decoder_packer = None
        self._traced_tokenize = None

    def build(self, input_shape=None):
        # The vocabulary of a deserialised tokenizer is loaded after
        # `__init__`, so the special-token ids are read here, as keras-hub's
        # preprocessors do.
        for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
            if getattr(self.tokenizer, name, None) is None:
                raise ValueError(
                    f"The tokenizer {type(self.tokenizer).__name__} has no {name}; "
                    "use a BERT-family tokenizer with a vocabulary."
                )
        special_ids = {
            "start_value": self.tokenizer.cls_token_id,
            "end_value": self.tokenizer.sep_token_id,
            "pad_value": self.tokenizer.pad_token_id,
        }
        self.context_packer = keras_hub.layers.StartEndPacker(
            sequence_length=self.sequence_length, return_padding_mask=True, **special_ids
        )
        self.decoder_packer = keras_hub.layers.StartEndPacker(
            sequence_length=self.decoder_sequence_length + 1, **special_ids
        )
        self.built = True

    def call(self, context_texts, next_texts=None):
        # TensorFlow is imported here, not at module level, so that kstory
        # imports (and saved models load) where only JAX or torch is installed.
        import tensorflow as tf

        if self._traced_tokenize is None:
            self._traced_tokenize = tf.function(self._tokenize, reduce_retracing=True)
        return self._traced_tokenize(context_texts, next_texts)

    def _tokenize(self, context_texts, next_texts=None):
        import tensorflow as tf

        # Fold any leading shape into one batch axis, pack, then unfold.
        context_texts = tf.convert_to_tensor(context_texts, dtype=tf.string)
        flat_ids = self.tokenizer(tf.reshape(context_texts, [-1]))
        token_ids, padding_mask = self.context_packer(flat_ids)
        outer_shape = tf.shape(context_texts)
        outputs = {
            "token_ids": tf.reshape(
                tf.cast(token_ids, tf.int32),
                tf.concat([outer_shape, [self.sequence_length]], axis=0),
            ),
            "padding_mask": tf.reshape(
                padding_mask, tf.concat([outer_shape, [self.sequence_length]], axis=0)
            ),
        }
        if next_texts is not None:
            next_texts = tf.convert_to_tensor(next_texts, dtype=tf.string)
            packed = tf.cast(self.decoder_packer(self.tokenizer(next_texts)), tf.int32)
            outputs["decoder_token_ids"] = packed[..., :-1]
            outputs["next_token_ids"] = packed[..., 1:]
        return outputs

    def generate_postprocess(self, token_ids):
        """Generated ids -> captions: the tokens between [CLS] and the first [SEP].

        As keras-hub's `CausalLMPreprocessor.generate_postprocess`, the
        inverse of tokenisation for what `StoryModel.generate` returns.

        Args:
            token_ids: int array `(batch, length)`, a row per caption.

        Returns:
            list of str, one per row; `""` for a row with no word before [SEP].
        """
        tokenizer = self.tokenizer
        special = {tokenizer.cls_token_id, tokenizer.pad_token_id}
        captions = []
        for row in np.asarray(keras.ops.convert_to_numpy(token_ids)):
            tokens = []
            for token in row.tolist():
                if token == tokenizer.sep_token_id:
                    break
                if token not in special:
                    tokens.append(token)
            text = tokenizer.detokenize(np.asarray(tokens, "int32")) if tokens else ""
            captions.append(str(text))
        return captions

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tokenizer": keras.layers.serialize(self.tokenizer),
                "sequence_length": self.sequence_length,
                "decoder_sequence_length": self.decoder_sequence_length,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tokenizer"] = keras.layers.deserialize(config["tokenizer"])
        return cls(**config)
