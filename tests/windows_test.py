import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kstory.data.story import Story
from kstory.data.windows import story_windows


def _story(story_id, num_frames):
    return Story(
        story_id=story_id,
        images=tuple(f"{story_id}/{i}" for i in range(num_frames)),
        texts=tuple(f"{story_id} frame {i}" for i in range(num_frames)),
    )


@given(st.lists(st.integers(min_value=0, max_value=22), max_size=12))
def test_a_story_of_n_frames_gives_n_minus_4_windows(frame_counts):
    stories = [_story(str(i), n) for i, n in enumerate(frame_counts)]
    windows = story_windows(stories)
    assert len(windows) == sum(max(n - 4, 0) for n in frame_counts)
    per_story = collections.Counter(int(story_index) for story_index, _ in windows)
    for story_index, n in enumerate(frame_counts):
        assert per_story[story_index] == max(n - 4, 0)


@given(
    st.lists(st.integers(min_value=0, max_value=15), max_size=8),
    st.integers(min_value=1, max_value=6),
)
def test_the_target_is_always_the_frame_after_the_context(frame_counts, num_context_steps):
    stories = [_story(str(i), n) for i, n in enumerate(frame_counts)]
    targets = collections.defaultdict(list)
    for story_index, start in story_windows(stories, num_context_steps):
        story = stories[story_index]
        context = story.texts[start : start + num_context_steps]
        target = story.texts[start + num_context_steps]
        # The frames are consecutive, and the target is the next one of the same story.
        frames = [int(text.rsplit(" ", 1)[1]) for text in (*context, target)]
        assert frames == list(range(start, start + num_context_steps + 1))
        assert all(text.startswith(f"{story.story_id} ") for text in (*context, target))
        targets[story_index].append(frames[-1])
    for story_index, n in enumerate(frame_counts):
        # Every frame after the first context is a target exactly once.
        assert targets[story_index] == list(range(num_context_steps, n))


def test_windows_cover_every_frame_as_target_once():
    windows = story_windows([_story("a", 9)])
    assert [int(start) + 4 for _, start in windows] == [4, 5, 6, 7, 8]


def test_first_mode_takes_the_first_five_frames_only():
    windows = story_windows([_story("a", 9), _story("b", 5), _story("c", 3)], mode="first")
    assert windows.tolist() == [[0, 0], [1, 0]]


def test_other_context_lengths():
    assert len(story_windows([_story("a", 9)], num_context_steps=2)) == 7


def test_bad_mode_names_the_choices():
    with pytest.raises(ValueError, match="'all', 'first'"):
        story_windows([], mode="middle")


def test_story_rejects_misaligned_frames():
    with pytest.raises(ValueError, match="3 images but 2 texts"):
        Story(story_id="x", images=(b"1", b"2", b"3"), texts=("a", "b"))
