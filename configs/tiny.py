"""The tiny config: embedded storyboards, a small model, a CPU.

Run:  kstory train --config configs/tiny.py --workdir runs/tiny
      kstory evaluate --workdir runs/tiny
      (or `make demo`, which also publishes the results)
Cost: see results/tiny_metrics.md for the time and the scores it reaches on
      2 CPU cores. `--smoke` shrinks data, model and epochs for tests.

No pretrained weights can be downloaded here, so the image encoder is a small
keras.applications model (MobileNetV3Small, minimalistic) trained from scratch rather than a
frozen random ResNet50, and the text encoder is a tiny random DistilBERT over
a WordPiece vocabulary learned from the training captions.
"""

import dataclasses

from kstory.config import Config
from kstory.data.data_config import DataConfig
from kstory.models.model_config import ModelConfig
from kstory.training.train_config import TrainConfig


def get_config(smoke=False):
    data = DataConfig(
        source="embedded",
        # Enough stories that the image decoder learns the announced scene
        # change instead of memorising the training frames (docs/fusion.md); few
        # epochs over them, and a small test share, keep the demo short.
        num_stories=900,
        embedded_test_fraction=0.05,
        image_size=64,
        target_image_size=64,
        tokenizer="learned",
        vocabulary_size=1000,
        sequence_length=48,
        decoder_sequence_length=48,
        batch_size=16,
        # Up to three shapes stay, a peeker and a visitor come and go, and a
        # story visits at most the five backgrounds.
        entity_slots=5,
    )
    model = ModelConfig(
        image_encoder="MobileNetV3Small",
        # Without squeeze-and-excitation and hard-swish: fewer, cheaper
        # layers, which trace and train faster on a CPU and learn the
        # storyboards as well (docs/performance.md).
        image_encoder_options={"minimalistic": True},
        image_weights="none",
        freeze_image_encoder=False,
        text_encoder="tiny",
        tiny_text_layers=2,
        tiny_text_hidden_dim=64,
        num_frozen_text_layers=0,
        embedding_dim=128,
        fusion_dim=128,
        # Sized to keep `make demo` within 3 minutes on 2 cores
        # (docs/performance.md); every claim of `kstory check-claims` holds.
        temporal_units=128,
        decoder_filters=64,
        # The residual path's full-resolution convolutions were the costliest
        # layers of the step at 32 channels (docs/performance.md).
        decoder_refinement_filters=16,
        text_decoder_embedding_dim=64,
        text_decoder_units=256,
        # Each step's state is asked for the next caption's words, weighted
        # enough that the encoder learns the signal lamp within the short
        # run: without it, or at weight 1, the caption ignores the images
        # (docs/fusion.md).
        bag_of_words_loss_weight=10.0,
        # Retrieval aligns each frame with the mean of its caption's token
        # states, which carries every word from the first step; the [CLS]
        # vector learnt it on some seeds only (docs/fusion.md).
        contrastive_text_pooling="mean",
        # Which shapes and background the next frame holds (docs/grounding.md);
        # weighted so that the story state learns to carry what the head
        # needs within the short run.
        grounding_head=True,
        grounding_loss_weight=5.0,
    )
    # Four epochs: with three, the next frame's SSIM is within the seed
    # spread of copying the last frame's, and below it on some CPUs.
    train = TrainConfig(epochs=4, learning_rate=2e-3, early_stopping_patience=3)
    if smoke:
        train = dataclasses.replace(train, epochs=2)
        data = dataclasses.replace(
            data,
            num_stories=24,
            embedded_test_fraction=0.15,
            generated_image_size=32,
            image_size=32,
            target_image_size=32,
            batch_size=4,
        )
        model = dataclasses.replace(
            model,
            tiny_text_hidden_dim=16,
            embedding_dim=16,
            fusion_dim=16,
            temporal_units=16,
            decoder_filters=32,
            text_decoder_embedding_dim=16,
            text_decoder_units=16,
        )
    return Config(data=data, model=model, train=train, seed=0)
