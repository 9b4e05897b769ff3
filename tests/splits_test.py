import random

import pytest

from kstory.data.splits import split_stories
from kstory.data.story import Story


def _stories(count):
    return [Story(story_id=str(i), images=(b"x",) * 5, texts=("t",) * 5) for i in range(count)]


FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_splits_are_disjoint_and_cover_all_stories():
    parts = split_stories(_stories(103), FRACTIONS, seed=0)
    ids = [set(s.story_id for s in part) for part in parts.values()]
    assert sum(len(part) for part in ids) == 103
    assert set.union(*ids) == {str(i) for i in range(103)}
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert [len(parts[name]) for name in FRACTIONS] == [
        82,
        11,
        10,
    ]  # rounded cumulative cuts 82.4, 92.7


def test_split_is_reproducible_and_independent_of_read_order():
    stories = _stories(50)
    shuffled = stories[:]
    random.Random(1).shuffle(shuffled)
    first = split_stories(stories, FRACTIONS, seed=4)
    second = split_stories(shuffled, FRACTIONS, seed=4)
    assert first == second
    other_seed = split_stories(stories, FRACTIONS, seed=5)
    assert first["test"] != other_seed["test"]


@pytest.mark.parametrize(
    "fractions", [{"train": 0.5, "test": 0.4}, {"train": 1.2, "test": -0.2}, {}]
)
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_stories(_stories(5), fractions)


def test_duplicate_ids_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        split_stories(_stories(3) + _stories(1), {"train": 1.0})
