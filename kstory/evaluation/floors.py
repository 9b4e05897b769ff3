"""Model-free baselines that every score is reported beside."""

import collections
import math
import re

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


def copy_last_captions(stories, windows, num_context_steps):
    """The last context caption of each window, as its prediction."""
    return [stories[s].texts[start + num_context_steps - 1] for s, start in windows]


def _tf_idf(documents, vocabulary, idf):
    matrix = np.zeros((len(documents), len(vocabulary)), np.float32)
    for row, document in enumerate(documents):
        for word, count in collections.Counter(_WORD.findall(document.lower())).items():
            if word in vocabulary:
                matrix[row, vocabulary[word]] = count * idf[word]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def nearest_neighbour_captions(train_stories, train_windows, stories, windows, num_context_steps):
    """The next caption of the training window whose context captions are closest.

    Contexts are compared by TF-IDF cosine over the words of their
    `num_context_steps` captions (step order kept by prefixing each word with
    its step), fitted on the training windows only.
    """

    def context(story, start):
        return " ".join(
            f"{step}{word}"
            for step in range(num_context_steps)
            for word in _WORD.findall(story.texts[start + step].lower())
        )

    train_contexts = [context(train_stories[s], start) for s, start in train_windows]
    counts = collections.Counter(w for c in train_contexts for w in set(_WORD.findall(c)))
    vocabulary = {word: index for index, word in enumerate(sorted(counts))}
    idf = {word: math.log(len(train_contexts) / count) + 1 for word, count in counts.items()}
    train_matrix = _tf_idf(train_contexts, vocabulary, idf)
    query_matrix = _tf_idf([context(stories[s], start) for s, start in windows], vocabulary, idf)
    nearest = (query_matrix @ train_matrix.T).argmax(axis=1)
    return [
        train_stories[train_windows[i][0]].texts[train_windows[i][1] + num_context_steps]
        for i in nearest
    ]
