import numpy as np

from kstory.evaluation.retrieval import retrieval_recall


def test_perfect_and_shuffled_pairs():
    embeddings = np.eye(6)
    perfect = retrieval_recall(embeddings, embeddings)
    assert all(value == 1.0 for value in perfect.values())
    shifted = retrieval_recall(embeddings, np.roll(embeddings, 1, axis=0))
    # Each true match ranks second: missed at 1, found at 5.
    assert shifted["image_to_text_R@1"] == 0.0 and shifted["image_to_text_R@5"] == 1.0


def test_recall_at_5_counts_near_misses():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(50, 8))
    texts = images + 0.5 * rng.normal(size=(50, 8))
    scores = retrieval_recall(images, texts)
    assert 0 < scores["image_to_text_R@1"] <= scores["image_to_text_R@5"] <= 1
