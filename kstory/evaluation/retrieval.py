"""Image<->text retrieval recall from the learned step embeddings."""

import numpy as np


def retrieval_recall(image_embeddings, text_embeddings, ks=(1, 5)):
    """Recall@k of matching each image to its own text, and each text to its image.

    Args:
        image_embeddings: `(n, dim)` array; row i pairs with text row i.
        text_embeddings: `(n, dim)` array.
        ks: the k values.

    Returns:
        dict like `{"image_to_text_R@1": ..., "text_to_image_R@5": ...}`.
    """
    images = np.asarray(image_embeddings, np.float64)
    texts = np.asarray(text_embeddings, np.float64)
    images /= np.maximum(np.linalg.norm(images, axis=1, keepdims=True), 1e-12)
    texts /= np.maximum(np.linalg.norm(texts, axis=1, keepdims=True), 1e-12)
    similarity = images @ texts.T
    scores = {}
    for direction, matrix in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        # Rank of the true match: how many candidates score strictly higher.
        true_scores = np.diag(matrix)[:, None]
        ranks = (matrix > true_scores).sum(axis=1)
        for k in ks:
            scores[f"{direction}_R@{k}"] = float((ranks < k).mean())
    return scores
