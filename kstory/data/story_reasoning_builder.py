"""A TFDS builder for StoryReasoning, built offline from downloaded shards."""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from kstory.data.story_reasoning_reader import read_story_reasoning


def _rgb_image(encoded):
    """Keeps 8-bit RGB PNG/JPEG bytes as they are; converts anything else."""
    with Image.open(io.BytesIO(encoded)) as image:
        if image.mode == "RGB" and image.format in ("PNG", "JPEG"):
            return io.BytesIO(encoded)
        return np.asarray(image.convert("RGB"))


class StoryReasoning(tfds.core.GeneratorBasedBuilder):
    """StoryReasoning (Oliveira and Matos, 2025) from manually downloaded shards.

    Each example is one story: its frames, the plain text of each frame (the
    `<gdi imageN>` block with grounding tags stripped) and the entity ids each
    frame grounds. Broken stories are skipped and logged, as by
    `read_story_reasoning`.

    Example:
    ```python
    import kstory.data.story_reasoning_builder  # registers the builder
    dataset = tfds.load(
        "story_reasoning",
        split="train",
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(
                manual_dir="path/to/StoryReasoning")},
    )
    ```

    References:
        - [Oliveira and Matos, 2025](https://arxiv.org/abs/2505.10292)
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Frames, per-frame texts and entity ids."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the parquet shards of the Hugging Face dataset "
        "daniel3303/StoryReasoning (for example with `huggingface-cli download "
        "daniel3303/StoryReasoning --repo-type dataset --local-dir DIR`) and "
        "pass DIR as manual_dir; it must hold data/train-*.parquet and "
        "data/test-*.parquet."
    )

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="Visual stories of movie stills with grounded per-frame text.",
            features=tfds.features.FeaturesDict(
                {
                    "story_id": tfds.features.Text(),
                    "images": tfds.features.Sequence(tfds.features.Image(shape=(None, None, 3))),
                    "texts": tfds.features.Sequence(tfds.features.Text()),
                    "entities": tfds.features.Sequence(tfds.features.Text()),
                }
            ),
            homepage="https://huggingface.co/datasets/daniel3303/StoryReasoning",
        )

    def _split_generators(self, dl_manager):
        return {
            split: self._generate_examples(dl_manager.manual_dir, split)
            for split in ("train", "test")
        }

    def _generate_examples(self, manual_dir, split):
        stories, skips = read_story_reasoning(str(manual_dir), split=split)
        for story in stories:
            yield (
                story.story_id,
                {
                    "story_id": story.story_id,
                    "images": [_rgb_image(image) for image in story.images],
                    "texts": list(story.texts),
                    "entities": [" ".join(ids) for ids in story.entities],
                },
            )
