import json

import pytest

from kstory.data.tokenizer_loading import RESERVED_TOKENS
from kstory.data.tokenizer_loading import load_tokenizer


def test_learned_vocabulary_has_the_special_tokens_first(learned_tokenizer):
    vocabulary = learned_tokenizer.get_vocabulary()
    assert vocabulary[: len(RESERVED_TOKENS)] == list(RESERVED_TOKENS)
    assert learned_tokenizer.pad_token_id == 0
    assert "circle" in vocabulary or "square" in vocabulary


def test_learned_tokenizer_round_trips_story_words(learned_tokenizer):
    ids = learned_tokenizer("the red circle")
    assert learned_tokenizer.detokenize(ids) == "the red circle"


def test_learned_needs_texts():
    with pytest.raises(ValueError, match="training texts"):
        load_tokenizer("learned")


def _write_hf_bert_folder(path, vocabulary):
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "vocab_size": len(vocabulary),
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 16,
                "max_position_embeddings": 32,
                "type_vocab_size": 2,
            }
        )
    )


def test_hugging_face_folder_loads_as_bert_tokenizer(tmp_path):
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "red", "ball"]
    folder = tmp_path / "hf"
    _write_hf_bert_folder(folder, vocabulary)
    tokenizer = load_tokenizer(str(folder))
    assert type(tokenizer).__name__ == "BertTokenizer"
    assert [int(i) for i in tokenizer("The red ball")] == [5, 6, 7]
    assert tokenizer.cls_token_id == 2


def test_folder_without_vocabulary_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="neither a keras-hub preset"):
        load_tokenizer(str(tmp_path))
