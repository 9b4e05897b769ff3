import io
import os

import numpy as np
import pytest
from PIL import Image

from kstory.data.storyboard_generator import StoryboardGenerator


def png_bytes(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def story_row(story_id, num_frames, image_size=16, texts=None):
    """A well-formed StoryReasoning row whose frame i is filled with value 10*i."""
    texts = texts or [f"<gdo char1>Ann</gdo> <gda char1>waves</gda> {i + 1}." for i in range(num_frames)]
    images = [
        {"bytes": png_bytes(np.full((image_size, image_size, 3), 10 * i, np.uint8)), "path": f"{i}.png"}
        for i in range(num_frames)
    ]
    story = "\n".join(f"<gdi image{i + 1}>{text}</gdi>" for i, text in enumerate(texts))
    return {
        "story_id": story_id,
        "images": images,
        "frame_count": num_frames,
        "chain_of_thought": "## Image 1",
        "story": story,
    }


@pytest.fixture(scope="session")
def embedded_rows():
    return StoryboardGenerator(num_stories=12, image_size=32, seed=3).rows()


@pytest.fixture(scope="session")
def embedded_stories(tmp_path_factory, embedded_rows):
    from kstory.data.parquet_shards import write_shards
    from kstory.data.story_reasoning_reader import read_story_reasoning

    directory = tmp_path_factory.mktemp("embedded")
    write_shards(embedded_rows, str(directory), "train")
    stories, skips = read_story_reasoning(str(directory), "train")
    assert len(skips) == 0
    return stories


@pytest.fixture(scope="session")
def learned_tokenizer(embedded_stories):
    from kstory.data.tokenizer_loading import load_tokenizer

    texts = [text for story in embedded_stories for text in story.texts]
    return load_tokenizer("learned", texts, vocabulary_size=200)


@pytest.fixture(scope="session")
def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
