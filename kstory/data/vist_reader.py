"""Reads VIST story-in-sequence annotations into aligned `Story` records."""

import collections
import json
import os

from kstory.data.skip_log import SkipLog
from kstory.data.story_admission import admit_stories
from kstory.data.story_parser import clean_text

VIST_STORY_LENGTH = 5
# Every image a photo id may name; unreadable formats are refused when admitted.
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def _index_images(image_dir):
    """Maps a photo id (the file stem) to its path, searching sub-folders."""
    index = {}
    for root, _, files in os.walk(image_dir):
        for name in files:
            stem, extension = os.path.splitext(name)
            if extension.lower() in _IMAGE_EXTENSIONS:
                index.setdefault(stem, os.path.join(root, name))
    return index


def _photo_order(sentence):
    try:
        return int(sentence.get("worker_arranged_photo_order"))
    except (TypeError, ValueError):
        return -1


def _not_utf8(text):
    """Whether `text` holds bytes that were not UTF-8 (read as lone surrogates)."""
    return any("\udc80" <= character <= "\udcff" for character in text)


def _sentences_by_story(annotations_path):
    """The annotation file's sentences, grouped by `story_id` (unordered)."""
    # Bytes that are not UTF-8 survive as lone surrogates, to skip their story.
    with open(annotations_path, encoding="utf-8", errors="surrogateescape") as file:
        try:
            document = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{annotations_path} is not valid JSON: {error}") from None
    if "annotations" not in document:
        raise ValueError(
            f"{annotations_path} has no 'annotations' key; is it a VIST story-in-sequence file?"
        )
    sentences = collections.defaultdict(list)
    for entry in document["annotations"]:
        for sentence in entry if isinstance(entry, list) else [entry]:
            sentences[str(sentence.get("story_id"))].append(sentence)
    return sentences


def read_vist(annotations_path, image_dir, text_field="text", validate_images=True):
    """Reads a VIST `*.story-in-sequence.json` file and its photos.

    Sentences are grouped by `story_id` and ordered by
    `worker_arranged_photo_order`. Each story must have exactly five photos,
    each found in `image_dir` (or a sub-folder) as `<photo_flickr_id>.<ext>`.
    Other stories are skipped with a log line naming them and a count.
    Images stay on disk; the pipeline reads them by path.

    Args:
        annotations_path: str. Path of e.g. `train.story-in-sequence.json`.
        image_dir: str. Folder holding the photos.
        text_field: str. `"text"` (VIST's tokenised, anonymised sentence) or
            `"original_text"`.
        validate_images: bool. Decode each photo once while reading.

    Returns:
        A tuple `(stories, skips)`: a list of `Story` and a `SkipLog`.
    """
    if text_field not in ("text", "original_text"):
        raise ValueError(f"text_field must be 'text' or 'original_text'; got {text_field!r}.")
    skips = SkipLog(f"VIST[{os.path.basename(annotations_path)}]")
    sentences = _sentences_by_story(annotations_path)
    images = _index_images(image_dir)
    candidates = []
    for story_id, story_sentences in sentences.items():
        story_sentences.sort(key=_photo_order)
        orders = [_photo_order(s) for s in story_sentences]
        if len(set(orders)) < len(orders):
            skips.skip(
                story_id,
                "duplicate_id",
                f"{len(orders)} sentences share this story id (photo orders {orders})",
            )
            continue
        if orders != list(range(VIST_STORY_LENGTH)):
            skips.skip(
                story_id,
                "wrong_frame_count",
                f"photo orders {orders}, expected 0..{VIST_STORY_LENGTH - 1} once each",
            )
            continue
        photo_ids = [str(s.get("photo_flickr_id")) for s in story_sentences]
        missing = [photo for photo in photo_ids if photo not in images]
        if missing:
            skips.skip(story_id, "missing_image", f"no file for photo(s) {missing}")
            continue
        texts = [clean_text(str(s.get(text_field) or "")) for s in story_sentences]
        not_utf8 = [i + 1 for i, text in enumerate(texts) if _not_utf8(text)]
        if not_utf8:
            skips.skip(story_id, "not_utf8", f"frame(s) {not_utf8} hold bytes that are not UTF-8")
            continue
        empty = [i + 1 for i, text in enumerate(texts) if not text]
        if empty:
            skips.skip(story_id, "empty_text", f"frame(s) {empty} have no text")
            continue
        candidates.append(
            {
                "story_id": story_id,
                "images": [images[photo] for photo in photo_ids],
                "texts": texts,
                "entities": [()] * VIST_STORY_LENGTH,
            }
        )
    stories = admit_stories(
        candidates, skips, min_frames=VIST_STORY_LENGTH, validate_images=validate_images
    )
    return stories, skips
