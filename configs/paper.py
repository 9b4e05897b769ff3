"""The paper config: StoryReasoning, ResNet50 (ImageNet), DistilBERT-base, 224 px.

Run:  kstory data --config configs/paper.py --workdir runs/paper \
        --set data.path=~/data/StoryReasoning
Cost: a GPU job; on 2 CPU cores it is far too slow to train. `--smoke` keeps
      the architecture and drops the batch to 2.

Getting the inputs (on a machine with network; then everything is local):
  - data: `huggingface-cli download daniel3303/StoryReasoning --repo-type
    dataset --local-dir ~/data/StoryReasoning` (see docs/data.md);
  - ResNet50 ImageNet weights: Keras fetches them for `image_weights=imagenet`
    into ~/.keras/models/; offline, point `model.image_weights` at a copy of
    `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`;
  - DistilBERT: the keras-hub preset `distilbert_base_en_uncased` (fetched to
    the Kaggle cache), or a local keras-hub / Hugging Face folder; set
    `data.tokenizer` and `model.text_encoder` to the same value.

The original settings: 256-d embeddings, a GRU over the four steps, AdamW at
1e-4, the lower four DistilBERT layers frozen.

Frames are padded to a square (`data.image_resize="pad"`), not squashed or
cropped: StoryReasoning's stills are movie frames of about 575x240. Squashing
stretches every face and body by 2.4 in height; a centre crop keeps only
the middle 42% of the width, and characters at the sides of a shot, whom the
grounding head must keep track of, leave the frame. Padding keeps the whole
shot at its own aspect ratio (at 224 px it fills 224x93 of the square).
The grounding head is on; 12 slots per kind hold the characters, objects
and backgrounds a story names (ids above 12 are counted and logged).
"""

import dataclasses

from kstory.config import Config
from kstory.data.data_config import DataConfig
from kstory.models.model_config import ModelConfig


def get_config(smoke=False):
    data = DataConfig(
        source="story_reasoning",
        path="~/data/StoryReasoning",
        image_size=224,
        target_image_size=64,
        tokenizer="distilbert_base_en_uncased",
        sequence_length=64,
        decoder_sequence_length=64,
        batch_size=32,
        image_resize="pad",
        entity_slots=12,
    )
    model = ModelConfig(
        image_encoder="ResNet50",
        image_weights="imagenet",
        freeze_image_encoder=True,
        text_encoder="distilbert_base_en_uncased",
        num_frozen_text_layers=4,
        embedding_dim=256,
        fusion_dim=256,
        temporal_model="gru",
        temporal_units=512,
        decoder_filters=256,
        text_decoder_embedding_dim=256,
        text_decoder_units=512,
        dtype_policy="mixed_bfloat16",
        grounding_head=True,
    )
    if smoke:
        data = dataclasses.replace(data, batch_size=2)
    return Config(data=data, model=model, seed=0)
