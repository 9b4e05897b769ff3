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
    texts = texts or [
        f"<gdo char1>Ann</gdo> <gda char1>waves</gda> {i + 1}." for i in range(num_frames)
    ]
    images = [
        {
            "bytes": png_bytes(np.full((image_size, image_size, 3), 10 * i, np.uint8)),
            "path": f"{i}.png",
        }
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


@pytest.fixture(scope="session")
def tiny_preprocessor(learned_tokenizer):
    from kstory.data.story_text_preprocessor import StoryTextPreprocessor

    return StoryTextPreprocessor(learned_tokenizer, sequence_length=48, decoder_sequence_length=48)


@pytest.fixture(scope="session")
def tiny_dataset(embedded_stories, tiny_preprocessor):
    from kstory.data.pipeline import make_dataset

    return make_dataset(
        embedded_stories[:6],
        tiny_preprocessor,
        image_size=32,
        target_image_size=32,
        batch_size=2,
        shuffle=True,
        seed=0,
    )


@pytest.fixture(scope="session")
def tiny_batch(tiny_dataset):
    import keras

    inputs, targets = next(iter(tiny_dataset))
    return (
        keras.tree.map_structure(lambda x: x.numpy(), inputs),
        keras.tree.map_structure(lambda x: x.numpy(), targets),
    )


def tiny_model_config(**overrides):
    """Tiny settings: MobileNetV3Small at 32 px, hidden 16, 2 text layers."""
    from kstory.models.model_config import ModelConfig

    settings = dict(
        image_encoder="MobileNetV3Small",
        image_weights="none",
        text_encoder="tiny",
        tiny_text_layers=2,
        tiny_text_hidden_dim=16,
        tiny_text_heads=2,
        num_frozen_text_layers=1,
        embedding_dim=16,
        fusion_dim=16,
        temporal_units=16,
        decoder_filters=32,
        text_decoder_embedding_dim=16,
        text_decoder_units=16,
    )
    settings.update(overrides)
    return ModelConfig(**settings)


def tiny_data_config(**overrides):
    from kstory.data.data_config import DataConfig

    settings = dict(
        image_size=32,
        target_image_size=32,
        sequence_length=48,
        decoder_sequence_length=48,
        batch_size=2,
    )
    settings.update(overrides)
    return DataConfig(**settings)


def tiny_image_encoder(image_size=32, policy=None):
    """A two-convolution CNN: a cheap stand-in for a keras.applications model."""
    import keras

    images = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", dtype=policy)(images)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", dtype=policy)(x)
    features = keras.layers.GlobalAveragePooling2D(dtype=policy)(x)
    return keras.Model(images, features, name="tiny_cnn")


def tiny_distilbert(num_layers=2):
    """A tiny random DistilBERT: 50 tokens, hidden size 16, length 8."""
    import keras_hub

    return keras_hub.models.DistilBertBackbone(
        vocabulary_size=50,
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=8,
    )


def build_tiny_model(
    preprocessor, compile=True, data_overrides=None, application=False, **overrides
):
    """A tiny StoryModel; `application=True` uses MobileNetV3Small, else a small CNN."""
    import keras

    from kstory.models.builders import build_story_model

    keras.utils.set_random_seed(0)
    config = tiny_model_config(**overrides)
    encoder = None if application else tiny_image_encoder(policy=config.dtype_policy)
    model = build_story_model(
        config, tiny_data_config(**(data_overrides or {})), preprocessor, image_encoder=encoder
    )
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


@pytest.fixture(scope="session")
def trained_workdir(repo_root, tmp_path_factory):
    """A run of the smoke tiny config: 14 stories, one epoch.

    Session-wide: tests that share it carry `xdist_group("serve_check")`, so
    that one worker trains it once.
    """
    from kstory.config import apply_overrides
    from kstory.config import load_config
    from kstory.training.train import train

    config = apply_overrides(
        load_config(f"{repo_root}/configs/tiny.py", smoke=True),
        ["data.num_stories=14", "train.epochs=1", "train.early_stopping_patience=0"],
    )
    workdir = str(tmp_path_factory.mktemp("serve") / "run")
    train(config, workdir, verbose=0)
    return workdir
