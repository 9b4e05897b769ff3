import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from kstory.data.story_parse_error import StoryParseError
from kstory.data.story_parser import grounded_entity_ids
from kstory.data.story_parser import parse_story_frames
from kstory.data.story_parser import strip_grounding_tags


def test_strips_grounding_tags_and_whitespace():
    text = "In <gdl bg1>the\n kitchen</gdl>, <gdo char1>James</gdo> <gda char1>enters</gda>."
    assert strip_grounding_tags(text) == "In the kitchen, James enters."


def test_entity_ids_in_first_seen_order_with_multi_id_tags():
    text = "<gdo char2>John</gdo> by <gdo bg1 bg2 bg3>walls</gdo>; <gda char2>he</gda>"
    assert grounded_entity_ids(text) == ("char2", "bg1", "bg2", "bg3")


def test_frames_follow_image_numbers_not_string_order():
    story = "<gdi image2>second</gdi>\n<gdi image1><gdo obj1>first</gdo></gdi>"
    assert parse_story_frames(story) == [("first", ("obj1",)), ("second", ())]


def test_each_frame_gets_only_its_own_block():
    story = "".join(f"<gdi image{i}>frame {i} text</gdi>" for i in range(1, 8))
    texts = [text for text, _ in parse_story_frames(story)]
    assert texts == [f"frame {i} text" for i in range(1, 8)]


@pytest.mark.parametrize(
    "story, reason",
    [
        ("no blocks at all", "no_frames"),
        ("<gdi image1>a</gdi><gdi image3>c</gdi>", "frame_numbering"),
        ("<gdi image1>a</gdi><gdi image1>again</gdi>", "frame_numbering"),
        ("<gdi image1>a</gdi><gdi image2>never closed", "malformed_tags"),
        ("<gdi image1>a <gdi image2>b</gdi> c</gdi>", "malformed_tags"),
        ("<gdi image1>a</gdi><gdi image2> <gdo obj1></gdo> </gdi>", "empty_text"),
        (None, "malformed_tags"),
    ],
)
def test_broken_stories_raise_typed_errors(story, reason):
    with pytest.raises(StoryParseError) as error:
        parse_story_frames(story)
    assert error.value.reason == reason


def test_empty_text_error_names_the_frame():
    with pytest.raises(StoryParseError, match="Frame 2"):
        parse_story_frames("<gdi image1>a</gdi><gdi image2></gdi>")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/gdiomaeln 123\n")), max_size=80))
def test_parser_returns_frames_or_a_typed_error_on_any_text(text):
    try:
        frames = parse_story_frames(text)
    except StoryParseError as error:
        assert error.reason in ("no_frames", "frame_numbering", "malformed_tags", "empty_text")
    else:
        assert frames and all(frame_text for frame_text, _ in frames)
