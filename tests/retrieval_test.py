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


def test_a_candidate_with_the_same_caption_is_a_hit():
    # Frames 0 and 1 share a caption, so their texts embed identically: the
    # text of frame 0 finds frame 1's image first, which counts as a hit.
    images = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    texts = np.array([[0.9, 0.1], [0.9, 0.1], [0.0, 1.0]])
    strict = retrieval_recall(images, texts, ks=(1,))
    assert strict["text_to_image_R@1"] < 1.0
    scores = retrieval_recall(images, texts, captions=["a", "a", "b"], ks=(1,))
    assert scores == {"image_to_text_R@1": 1.0, "text_to_image_R@1": 1.0}


def test_chance_counts_captions_the_same_way():
    from kstory.evaluation.retrieval import retrieval_chance

    # Distinct captions: 1/n at k=1 and k/n at k.
    distinct = retrieval_chance([str(i) for i in range(10)], ks=(1, 5))
    np.testing.assert_allclose(distinct["image_to_text_R@1"], 0.1)
    np.testing.assert_allclose(distinct["text_to_image_R@5"], 0.5)
    # Captions "a" x4 and "b" x1 ... : a query with m matches of n hits with
    # probability 1 - C(n-m, k) / C(n, k); averaged over the queries.
    captions = ["a"] * 4 + [str(i) for i in range(6)]
    chance = retrieval_chance(captions, ks=(1,))
    np.testing.assert_allclose(chance["image_to_text_R@1"], (4 * 0.4 + 6 * 0.1) / 10)
    # Random embeddings score about the chance value.
    rng = np.random.default_rng(0)
    captions = [str(i % 50) for i in range(400)]
    hits = np.mean(
        [
            retrieval_recall(
                rng.normal(size=(400, 16)), rng.normal(size=(400, 16)), captions, ks=(5,)
            )["image_to_text_R@5"]
            for _ in range(20)
        ]
    )
    expected = retrieval_chance(captions, ks=(5,))["image_to_text_R@5"]
    assert abs(hits - expected) < 0.25 * expected
