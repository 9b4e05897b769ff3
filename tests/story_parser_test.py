import re

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from kstory.data.story_parse_error import StoryParseError
from kstory.data.story_parser import clean_text
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
        (None, "not_text"),
    ],
)
def test_broken_stories_raise_typed_errors(story, reason):
    with pytest.raises(StoryParseError) as error:
        parse_story_frames(story)
    assert error.value.reason == reason


def test_bytes_that_are_not_utf8_name_the_offset():
    with pytest.raises(StoryParseError, match="byte 0xff at offset 13") as error:
        parse_story_frames(b"<gdi image1>a\xff</gdi>")
    assert error.value.reason == "not_utf8"


def test_control_characters_become_spaces():
    frames = parse_story_frames("<gdi image1>A\x00ball\x1b[0m rolls\x7f.</gdi>")
    assert frames == [("A ball [0m rolls .", ())]


def test_empty_text_error_names_the_frame():
    with pytest.raises(StoryParseError, match="Frame 2"):
        parse_story_frames("<gdi image1>a</gdi><gdi image2></gdi>")


REASONS = ("no_frames", "frame_numbering", "malformed_tags", "empty_text", "not_utf8")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_GROUNDING_TAG = re.compile(r"</?gd[oal]\b[^>]*>")


def _assert_frames_or_typed_error(story):
    try:
        frames = parse_story_frames(story)
    except StoryParseError as error:
        assert error.reason in REASONS
    else:
        assert frames
        for frame_text, _ in frames:
            assert frame_text and frame_text == frame_text.strip()
            assert not _CONTROL.search(frame_text) and not _GROUNDING_TAG.search(frame_text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/gdiomaeln 123\n")), max_size=80))
def test_parser_returns_frames_or_a_typed_error_on_tag_soup(text):
    _assert_frames_or_typed_error(text)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_parser_returns_frames_or_a_typed_error_on_any_text_or_bytes(story):
    _assert_frames_or_typed_error(story)


_FRAME_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=30
).filter(lambda text: clean_text(text))


@settings(max_examples=100, deadline=None)
@given(st.lists(_FRAME_TEXT, min_size=1, max_size=12), st.randoms())
def test_each_frame_gets_its_own_text_in_any_block_order(texts, random):
    order = list(range(len(texts)))
    random.shuffle(order)
    story = "\n".join(f"<gdi image{i + 1}><gdo char1>{texts[i]}</gdo></gdi>" for i in order)
    frames = parse_story_frames(story)
    assert [text for text, _ in frames] == [clean_text(text) for text in texts]
    # The same story as UTF-8 bytes, as a binary parquet column holds it.
    assert parse_story_frames(story.encode("utf-8")) == frames
