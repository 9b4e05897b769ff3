"""Finds the tokenizer for the text encoder: preset, local folder or learned."""

import os

import keras_hub
import tensorflow as tf

from kstory.config_checks import from_preset

RESERVED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def learn_tokenizer(texts, vocabulary_size=1000):
    """Learns a WordPiece vocabulary from texts; returns a DistilBERT tokenizer.

    `[PAD]` gets id 0. The vocabulary may come out smaller than
    `vocabulary_size` when the texts hold fewer distinct pieces.

    Args:
        texts: list of str. Training texts only, never held-out ones.
        vocabulary_size: int. Largest vocabulary to learn.
    """
    if not texts:
        raise ValueError("Cannot learn a vocabulary from no texts.")
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        # A Python list would be read as file names; a dataset is read as text.
        tf.data.Dataset.from_tensor_slices(list(texts)).batch(256),
        vocabulary_size=vocabulary_size,
        lowercase=True,
        reserved_tokens=list(RESERVED_TOKENS),
    )
    return keras_hub.models.DistilBertTokenizer(vocabulary=vocabulary, lowercase=True)


def load_tokenizer(source, training_texts=None, vocabulary_size=1000):
    """Returns a keras-hub tokenizer from a preset, a folder, or learned.

    Args:
        source: str. `"learned"` learns a WordPiece vocabulary from
            `training_texts`; a local folder is read as a keras-hub preset or a
            Hugging Face checkpoint (`vocab.txt` + `tokenizer_config.json`,
            BERT or DistilBERT); anything else is a keras-hub preset name such
            as `"distilbert_base_en_uncased"`, which needs network or a cache.
        training_texts: list of str. Needed for `"learned"`.
        vocabulary_size: int. Size of a learned vocabulary.

    Example:
    >>> tokenizer = load_tokenizer("learned", ["a red ball", "a blue box"], 40)
    >>> tokenizer.pad_token_id
    0
    """
    if source == "learned":
        if training_texts is None:
            raise ValueError("tokenizer='learned' needs the training texts.")
        return learn_tokenizer(training_texts, vocabulary_size)
    source = os.path.expanduser(source)
    if os.path.isdir(source):
        has_preset = os.path.exists(os.path.join(source, "tokenizer.json"))
        has_hf = os.path.exists(os.path.join(source, "vocab.txt"))
        if not (has_preset or has_hf):
            raise ValueError(
                f"data.tokenizer folder {source!r} holds neither a keras-hub preset "
                "(tokenizer.json) nor a Hugging Face vocab.txt."
            )
    return from_preset(keras_hub.tokenizers.Tokenizer.from_preset, "data.tokenizer", source)
