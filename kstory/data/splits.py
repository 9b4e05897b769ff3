"""Splits stories, never windows, into train/validation/test."""

import numpy as np


def split_stories(stories, fractions, seed=0):
    """Splits stories into named parts by a seeded shuffle of their ids.

    Splitting is by story, so no story's frames reach two splits. The result
    depends only on the set of story ids, the fractions and the seed, not on
    the order the stories were read in.

    Args:
        stories: list of `Story`, with unique ids.
        fractions: dict mapping a split name to its share; shares sum to 1.
        seed: int. Seed of the shuffle.

    Returns:
        A dict mapping each split name to its list of `Story`, in id order.

    Example:
    >>> from kstory.data.story import Story
    >>> stories = [Story(str(i), (b"",), ("a caption",)) for i in range(10)]
    >>> parts = split_stories(stories, {"train": 0.8, "validation": 0.2})
    >>> {name: len(part) for name, part in parts.items()}
    {'train': 8, 'validation': 2}
    """
    if not fractions or any(share < 0 for share in fractions.values()):
        raise ValueError(f"fractions must be non-negative shares; got {fractions}.")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must sum to 1; got {fractions} (sum {sum(fractions.values())})."
        )
    ordered = sorted(stories, key=lambda story: story.story_id)
    ids = [story.story_id for story in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("split_stories needs unique story ids; read them with a kstory reader.")
    order = np.random.default_rng(seed).permutation(len(ordered))
    boundaries = np.round(np.cumsum(list(fractions.values())) * len(ordered)).astype(int)
    parts, start = {}, 0
    for name, end in zip(fractions, boundaries):
        chosen = sorted(order[start:end])
        parts[name] = [ordered[index] for index in chosen]
        start = end
    return parts
