"""Turns stories into 4->1 training windows."""

import numpy as np

WINDOW_MODES = ("all", "first")


def story_windows(stories, num_context_steps=4, mode="all"):
    """Lists the (context, target) windows of each story.

    With `mode="all"`, every run of `num_context_steps + 1` consecutive
    frames is a window, so a story of n frames gives n - num_context_steps.
    With `mode="first"`, each story gives only its first window, the protocol
    of earlier work that used the first five frames.

    Args:
        stories: list of `Story`.
        num_context_steps: int. Context frames per window.
        mode: str. `"all"` or `"first"`.

    Returns:
        An int64 array of shape `(num_windows, 2)`: the story's index in
        `stories` and the index of the window's first frame. The target is
        frame `first + num_context_steps`.

    Example:
    >>> from kstory.data.story import Story
    >>> story = Story("s1", (b"",) * 6, tuple(f"caption {i}" for i in range(6)))
    >>> story_windows([story]).tolist()
    [[0, 0], [0, 1]]
    """
    if mode not in WINDOW_MODES:
        raise ValueError(f"mode must be one of {WINDOW_MODES}; got {mode!r}.")
    if num_context_steps < 1:
        raise ValueError(f"num_context_steps must be at least 1; got {num_context_steps}.")
    windows = []
    for story_index, story in enumerate(stories):
        num_windows = max(story.num_frames - num_context_steps, 0)
        if mode == "first":
            num_windows = min(num_windows, 1)
        windows.extend((story_index, start) for start in range(num_windows))
    return np.asarray(windows, dtype=np.int64).reshape(-1, 2)
