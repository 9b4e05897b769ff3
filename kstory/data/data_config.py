"""Settings of the data layer: source, windows, splits and pipeline."""

import dataclasses
from typing import Optional

from kstory.config_checks import check_at_least
from kstory.config_checks import check_choices
from kstory.config_checks import check_field_types

SOURCES = ("embedded", "story_reasoning", "vist")


@dataclasses.dataclass
class DataConfig:
    """Where the stories come from and how they become batches.

    Args:
        source: str. `"embedded"` (generated storyboards, no download),
            `"story_reasoning"` (HF parquet shards) or `"vist"`.
        path: str. StoryReasoning: the downloaded folder (or a Hub name with
            HF `datasets` installed). VIST: the folder of
            `{train,val,test}.story-in-sequence.json`. Unused when embedded.
        image_dir: str. VIST: the folder of photos.
        num_stories: int. Embedded: stories to generate (train + test).
        min_frames: int. Embedded: fewest frames per story.
        max_frames: int. Embedded: most frames per story.
        generated_image_size: int. Embedded: side of the generated frames.
        max_objects: int. Embedded: most shapes per scene.
        generator_seed: int. Embedded: seed of the generator.
        embedded_test_fraction: float. Embedded: share of stories written to
            the test shards, as the real dataset ships a test split.
        num_context_steps: int. Context frames per window (4 in the task).
        window_mode: str. `"all"` 4->1 windows, or each story's `"first"`.
        validation_fraction: float. Share of training stories held out for
            validation, split by story.
        split_seed: int. Seed of the validation split.
        image_size: int. Side of the context images fed to the encoder.
        target_image_size: int. Side of the predicted next image.
        image_resize: str. How a frame that is not square becomes square,
            the same in training, the feature cache, serving and the
            storyboards: `"squash"` (stretched), `"crop"` (the centred
            square) or `"pad"` (centred on black, nothing lost); see
            `kstory.data.pipeline.square_frame`.
        entity_slots: int. Grounding: slots per entity kind (`char`, `obj`,
            `bg`), i.e. the most entities of a kind a story can name to the
            grounding head (`kstory.data.entities`).
        tokenizer: str. `"learned"` (WordPiece from the training texts), a
            keras-hub preset name, or a local keras-hub / HF folder.
        vocabulary_size: int. Size of a learned vocabulary.
        sequence_length: int. Tokens per context caption.
        decoder_sequence_length: int. Tokens of the decoder input/target.
        batch_size: int. Windows per batch.
        validate_images: bool. Decode every image once while reading.
    """

    source: str = "embedded"
    path: Optional[str] = None
    image_dir: Optional[str] = None
    num_stories: int = 300
    min_frames: int = 5
    max_frames: int = 8
    generated_image_size: int = 64
    max_objects: int = 3
    generator_seed: int = 0
    embedded_test_fraction: float = 0.15
    num_context_steps: int = 4
    window_mode: str = "all"
    validation_fraction: float = 0.1
    split_seed: int = 0
    image_size: int = 64
    target_image_size: int = 64
    image_resize: str = "squash"
    entity_slots: int = 8
    tokenizer: str = "learned"
    vocabulary_size: int = 1000
    sequence_length: int = 48
    decoder_sequence_length: int = 48
    batch_size: int = 16
    validate_images: bool = True

    def __post_init__(self):
        check_field_types(self, "data")
        check_choices(
            self,
            "data",
            {
                "source": SOURCES,
                "window_mode": ("all", "first"),
                "image_resize": ("squash", "crop", "pad"),
            },
        )
        if self.source in ("story_reasoning", "vist") and not self.path:
            raise ValueError(f"data.path is required when data.source={self.source!r}.")
        if self.source == "vist" and not self.image_dir:
            raise ValueError("data.image_dir is required when data.source='vist'.")
        positive = (
            "num_stories",
            "min_frames",
            "generated_image_size",
            "max_objects",
            "num_context_steps",
            "image_size",
            "target_image_size",
            "vocabulary_size",
            "sequence_length",
            "decoder_sequence_length",
            "batch_size",
            "entity_slots",
        )
        check_at_least(self, "data", positive, 1)
        if self.max_frames < self.min_frames:
            raise ValueError(
                f"data.max_frames ({self.max_frames}) is below data.min_frames ({self.min_frames})."
            )
        for name in ("validation_fraction", "embedded_test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be in [0, 1); got {getattr(self, name)}.")
