"""Splits a grounded StoryReasoning story string into per-frame texts."""

import re

from kstory.data.story_parse_error import StoryParseError

_FRAME_BLOCK = re.compile(r"<gdi image(\d+)>(.*?)</gdi>", re.DOTALL)
_FRAME_OPEN = re.compile(r"<gdi\b")
_GROUNDING_OPEN = re.compile(r"<gd[oal]\b([^>]*)>")
_GROUNDING_TAG = re.compile(r"</?gd[oal]\b[^>]*>")
_WHITESPACE = re.compile(r"\s+")
# C0 and C1 control characters; tab and newlines are whitespace already.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(text):
    r"""Turns control characters into spaces and normalises whitespace.

    Example:
    >>> clean_text("A\x00 ball\n  rolls.\x1b")
    'A ball rolls.'
    """
    return _WHITESPACE.sub(" ", _CONTROL.sub(" ", text)).strip()


def strip_grounding_tags(text):
    """Removes `<gdo|gda|gdl ...>` tags and control characters; normalises whitespace.

    Example:
    >>> strip_grounding_tags("<gdo char1>James</gdo> <gda char1>enters</gda>.")
    'James enters.'
    """
    return clean_text(_GROUNDING_TAG.sub("", text))


def grounded_entity_ids(text):
    """Returns the entity ids named by grounding tags, in first-seen order.

    Example:
    >>> grounded_entity_ids("<gdo char1>James</gdo> by <gdo bg1 bg2>walls</gdo>")
    ('char1', 'bg1', 'bg2')
    """
    seen = {}
    for match in _GROUNDING_OPEN.finditer(text):
        for entity_id in match.group(1).split():
            seen.setdefault(entity_id, None)
    return tuple(seen)


def parse_story_frames(story):
    """Splits a story string into the text and entities of each frame.

    Frame N's text is the `<gdi imageN>...</gdi>` block, with the grounding
    tags inside it stripped. Frames must be numbered 1..n, each exactly once,
    and no block may be empty, unclosed or nested: otherwise the frames could
    not be matched to the story's images and a `StoryParseError` is raised.

    Args:
        story: str, or UTF-8 bytes. The `story` column of a StoryReasoning row.

    Returns:
        A list of `(text, entity_ids)` tuples, one per frame, in image order.

    Example:
    >>> parse_story_frames(
    ...     "<gdi image1>A <gdo obj1>ball</gdo>.</gdi><gdi image2>It rolls.</gdi>")
    [('A ball.', ('obj1',)), ('It rolls.', ())]
    """
    if isinstance(story, (bytes, bytearray)):
        try:
            story = bytes(story).decode("utf-8")
        except UnicodeDecodeError as error:
            raise StoryParseError(
                "not_utf8",
                f"The story is not UTF-8: byte {story[error.start]:#04x} at offset {error.start}.",
            ) from None
    if not isinstance(story, str):
        raise StoryParseError(
            "not_text", f"Expected the story as a string, got {type(story).__name__}."
        )
    blocks = _FRAME_BLOCK.findall(story)
    if not blocks:
        raise StoryParseError("no_frames", "The story has no <gdi imageN>...</gdi> block.")
    num_opened = len(_FRAME_OPEN.findall(story))
    if num_opened != len(blocks) or any(_FRAME_OPEN.search(body) for _, body in blocks):
        raise StoryParseError(
            "malformed_tags",
            f"The story opens {num_opened} <gdi> tags but closes {len(blocks)} "
            "blocks cleanly (unclosed or nested <gdi>).",
        )
    numbers = [int(number) for number, _ in blocks]
    expected = list(range(1, len(blocks) + 1))
    if sorted(numbers) != expected:
        raise StoryParseError(
            "frame_numbering",
            f"Frame blocks are numbered {numbers}; expected each of 1..{len(blocks)} once.",
        )
    frames = [None] * len(blocks)
    for number, body in zip(numbers, (body for _, body in blocks)):
        text = strip_grounding_tags(body)
        if not text:
            raise StoryParseError("empty_text", f"Frame {number} has no text.")
        frames[number - 1] = (text, grounded_entity_ids(body))
    return frames
