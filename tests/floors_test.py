from kstory.data.story import Story
from kstory.data.windows import story_windows
from kstory.evaluation import floors


def _story(story_id, texts):
    return Story(story_id, tuple(b"x" for _ in texts), tuple(texts))


def test_copy_last_caption_is_the_fourth_context_caption():
    stories = [_story("a", [f"caption {i}" for i in range(7)])]
    windows = story_windows(stories)
    assert floors.copy_last_captions(stories, windows, 4) == ["caption 3", "caption 4", "caption 5"]


def test_nearest_neighbour_returns_the_closest_training_continuation():
    train = [
        _story(
            "t1", ["red ball", "red ball rolls", "red ball stops", "red ball waits", "RED NEXT"]
        ),
        _story(
            "t2", ["blue box", "blue box opens", "blue box shuts", "blue box waits", "BLUE NEXT"]
        ),
    ]
    held_out = [_story("h", ["blue box", "blue box opens", "blue box shuts", "blue box sits", "?"])]
    result = floors.nearest_neighbour_captions(
        train, story_windows(train), held_out, story_windows(held_out), 4
    )
    assert result == ["BLUE NEXT"]
