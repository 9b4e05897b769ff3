"""The tiny config: embedded storyboards on a CPU.

Run:  kstory data --config configs/tiny.py --workdir runs/tiny
Cost: generating and reading the 300 embedded stories takes about 5 s on 2 CPU
      cores; `--smoke` shrinks everything to a few seconds for tests.
"""

import dataclasses

from kstory.config import Config
from kstory.data.data_config import DataConfig


def get_config(smoke=False):
    data = DataConfig(
        source="embedded",
        num_stories=300,
        image_size=64,
        target_image_size=64,
        tokenizer="learned",
        vocabulary_size=1000,
        sequence_length=48,
        decoder_sequence_length=48,
        batch_size=16,
    )
    if smoke:
        data = dataclasses.replace(
            data,
            num_stories=24,
            generated_image_size=32,
            image_size=32,
            target_image_size=32,
            batch_size=4,
        )
    return Config(data=data, seed=0)
