"""Image<->text retrieval recall from the learned step embeddings."""

import math

import numpy as np


def _hit_chance(num_candidates, num_matching, k):
    """Probability that k of `num_candidates` drawn at random include a match."""
    k = min(k, num_candidates)
    misses = num_candidates - num_matching
    if misses < k:
        return 1.0
    return 1.0 - math.comb(misses, k) / math.comb(num_candidates, k)


def retrieval_recall(image_embeddings, text_embeddings, captions=None, ks=(1, 5)):
    """Recall@k of matching each image to its text, and each text to its image.

    Frames with the same caption cannot be told apart by their text, so a hit
    is any candidate whose caption equals the query's: image -> text counts a
    text with the true caption, text -> image an image whose own caption is
    the query's. `retrieval_chance` counts the same way.

    Args:
        image_embeddings: `(n, dim)` array; row i pairs with text row i.
        text_embeddings: `(n, dim)` array.
        captions: list of n str, each row's caption; None treats all as distinct.
        ks: the k values.

    Returns:
        dict like `{"image_to_text_R@1": ..., "text_to_image_R@5": ...}`.
    """
    images = np.asarray(image_embeddings, np.float64)
    texts = np.asarray(text_embeddings, np.float64)
    images /= np.maximum(np.linalg.norm(images, axis=1, keepdims=True), 1e-12)
    texts /= np.maximum(np.linalg.norm(texts, axis=1, keepdims=True), 1e-12)
    similarity = images @ texts.T
    same = _same_caption(captions, len(images))
    scores = {}
    for direction, matrix in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        # Rank of the best match: how many non-matching candidates score
        # strictly higher than every matching one.
        best_match = np.where(same, matrix, -np.inf).max(axis=1, keepdims=True)
        ranks = ((matrix > best_match) & ~same).sum(axis=1)
        for k in ks:
            scores[f"{direction}_R@{k}"] = float((ranks < k).mean())
    return scores


def retrieval_chance(captions, ks=(1, 5), num_rows=None):
    """Expected `retrieval_recall` of random embeddings, with the same hit rule.

    Args:
        captions: list of str, one per row; None for all distinct (then pass
            `num_rows`).
        ks: the k values.
    """
    num_rows = len(captions) if captions is not None else num_rows
    matching = _same_caption(captions, num_rows).sum(axis=1)
    return {
        f"{direction}_R@{k}": float(np.mean([_hit_chance(num_rows, m, k) for m in matching]))
        for direction in ("image_to_text", "text_to_image")
        for k in ks
    }


def _same_caption(captions, num_rows):
    if captions is None:
        return np.eye(num_rows, dtype=bool)
    if len(captions) != num_rows:
        raise ValueError(f"{len(captions)} captions for {num_rows} embeddings.")
    captions = np.asarray(captions, dtype=object)
    return captions[:, None] == captions[None, :]
