import logging

import numpy as np
import pytest

from kstory.evaluation import text_metrics

# Tests sharing a module fixture stay on one xdist worker (make test). The
# metrics are NumPy, keras-hub's ROUGE on TensorFlow and pycocoevalcap, the
# same under every Keras backend: `make test` runs them once.
pytestmark = [pytest.mark.xdist_group("text_metrics"), pytest.mark.single_backend]

REFERENCES = [
    "the red circle moves left at the top",
    "a blue square grows at the bottom right",
    "the small green triangle turns yellow at the center",
    "in the night the purple circle falls",
]
PREDICTIONS = [
    "the red circle moves right at the top",
    "a blue square shrinks at the bottom right",
    "the small green triangle turns green at the center",
    "in the night the purple circle rises",
]


@pytest.fixture(scope="module")
def coco():
    return text_metrics.coco_caption_scores(REFERENCES, PREDICTIONS)


def test_identical_captions_score_one():
    scores = text_metrics.coco_caption_scores(REFERENCES, REFERENCES)
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L"):
        np.testing.assert_allclose(scores[name], 1.0, atol=1e-6)
    assert scores["METEOR"] > 0.95


def test_python_bleu_agrees_with_pycocoevalcap(coco):
    python = text_metrics.python_caption_scores(REFERENCES, PREDICTIONS)
    for n in range(1, 5):
        np.testing.assert_allclose(python[f"BLEU-{n}"], coco[f"BLEU-{n}"], atol=1e-3)


def test_keras_hub_rouge_agrees_with_pycocoevalcap(coco):
    # pycocoevalcap's ROUGE-L is an F-measure with beta 1.2, averaged per
    # caption; rebuild it from keras-hub's per-caption precision and recall.
    import keras_hub

    values = []
    for reference, prediction in zip(REFERENCES, PREDICTIONS):
        metric = keras_hub.metrics.RougeL()
        metric.update_state([reference], [prediction])
        result = metric.result()
        precision, recall = float(result["precision"]), float(result["recall"])
        values.append((1 + 1.2**2) * precision * recall / (recall + 1.2**2 * precision))
    np.testing.assert_allclose(coco["ROUGE-L"], np.mean(values), atol=1e-6)


def test_known_bleu_counts(coco):
    # 32 predicted words, 28 match: BLEU-1 = 28/32 with no brevity penalty.
    np.testing.assert_allclose(coco["BLEU-1"], 28 / 32, atol=1e-6)
    assert coco["BLEU-4"] < coco["BLEU-1"]
    assert 0 < coco["METEOR"] < 1 and coco["CIDEr"] > 0


def test_without_java_reports_python_scores_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(text_metrics.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="kstory.evaluation"):
        scores = text_metrics.caption_scores(REFERENCES, PREDICTIONS)
    assert "Java is not installed" in caplog.text
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"}


def test_empty_prediction_scores_zero_without_crashing():
    scores = text_metrics.coco_caption_scores(REFERENCES[:2], ["", "a blue square"])
    assert 0 <= scores["BLEU-1"] < 1 and scores["METEOR"] < 1


def test_the_shared_meteor_process_carries_nothing_between_calls(coco):
    # One METEOR process serves every call; a second set scored in between
    # must leave the first set's score as a fresh process gives it.
    from pycocoevalcap.meteor.meteor import Meteor

    text_metrics.coco_caption_scores(REFERENCES[:2], REFERENCES[2:])
    again = text_metrics.coco_caption_scores(REFERENCES, PREDICTIONS)
    gts = {str(i): [r] for i, r in enumerate(REFERENCES)}
    res = {str(i): [p] for i, p in enumerate(PREDICTIONS)}
    fresh, _ = Meteor().compute_score(gts, res)
    assert again["METEOR"] == coco["METEOR"]
    np.testing.assert_allclose(again["METEOR"], fresh, atol=1e-6)


def test_sets_scored_together_score_as_each_alone(coco):
    # One tokenizer call serves every set: a mix-up of the sets' rows (keys)
    # would change their scores.
    together = text_metrics.caption_scores(
        REFERENCES, {"model": PREDICTIONS, "copy": REFERENCES, "reversed": PREDICTIONS[::-1]}
    )
    assert together["model"] == coco
    assert together["copy"] == text_metrics.coco_caption_scores(REFERENCES, REFERENCES)
    assert together["reversed"] == text_metrics.coco_caption_scores(REFERENCES, PREDICTIONS[::-1])
    assert together["reversed"] != coco
