"""Settings of the story model: encoders, fusion, decoders, losses, precision."""

import dataclasses
from typing import Optional

from kstory.config_checks import check_field_types
from kstory.models.story_backbone import MODALITIES
from kstory.models.story_backbone import TEMPORAL_MODELS
from kstory.models.story_backbone import TEXT_POOLINGS
from kstory.models.story_model import IMAGE_LOSSES

DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass
class ModelConfig:
    """The architecture and loss settings of a `StoryModel`.

    Image size, caption lengths and vocabulary come from the data config and
    the tokenizer, so they cannot disagree with the pipeline.

    Args:
        image_encoder: str. A `keras.applications` name (`ResNet50`,
            `MobileNetV3Small`, ...).
        image_weights: str. `"imagenet"` (needs network or the Keras cache),
            `"none"` (random), or a local weights file (`.weights.h5` or a
            legacy no-top `.h5`).
        image_encoder_options: dict. Further keyword arguments of the
            `keras.applications` constructor, e.g. `{"minimalistic": True}`
            or `{"alpha": 0.75}` for the MobileNets.
        freeze_image_encoder: bool. Keep the image encoder fixed.
        image_batch_norm_momentum: float. Momentum of a trained (not frozen)
            image encoder's batch-normalisation statistics, which inference
            uses. The applications' 0.99-0.999 leave them near their initial
            values after a short run, and the features then collapse (see
            `kstory.models.builders.set_batch_norm_momentum`);
            `train.batch_norm_recalibration_batches` re-estimates them before
            each validation in any case.
        text_encoder: str. `"tiny"` (a small random DistilBERT sized from the
            tokenizer), a keras-hub preset name (`distilbert_base_en_uncased`),
            or a local keras-hub or Hugging Face folder (BERT or DistilBERT).
            Use the same source for `data.tokenizer`.
        tiny_text_layers: int. Tiny encoder: transformer layers.
        tiny_text_hidden_dim: int. Tiny encoder: hidden size.
        tiny_text_heads: int. Tiny encoder: attention heads.
        tiny_text_dropout: float. Tiny encoder: dropout rate.
        tiny_text_intermediate_dim: int. Tiny encoder: feed-forward size;
            None for twice the hidden size.
        num_frozen_text_layers: int. Lower text layers frozen with the
            embeddings; -1 freezes nothing.
        embedding_dim: int. Shared image/text embedding size (256 in the paper).
        fusion_dim: int. Fused step size.
        temporal_model: str. `"gru"` (default) or `"transformer"`.
        temporal_units: int. Story state size.
        temporal_num_layers: int. Transformer layers.
        temporal_num_heads: int. Transformer heads.
        decoder_filters: int. Image decoder channels at 4x4.
        decoder_refinement_filters: int. Image decoder channels of the
            residual path's full-resolution convolutions.
        image_decoder_residual: bool. Predict the next frame as a change to the
            last context frame.
        text_decoder_embedding_dim: int. Text decoder token embedding size.
        text_decoder_units: int. Text decoder GRU units.
        text_decoder_attention_heads: int. Heads attending over the context
            captions' tokens; 0 for a plain GRU decoder.
        modalities: str. `"both"`, or `"images"` / `"captions"` alone (the
            fusion ablation of `kstory ablate`).
        contrastive_head: bool. Fuse each step through projections of its
            own, so that the contrastive embeddings are a head beside the
            fusion path (as in SimCLR) rather than its input.
        contrastive_text_pooling: str. `"cls"` or `"mean"`: what the
            contrastive text embedding projects (see `StoryBackbone`).
        image_memory: bool. The attending text decoder's memory also holds
            one slot per context image, beside the captions' tokens.
        image_loss: str. `"mse"` or `"mse+l1"`.
        image_loss_weight: float. Weight of the image loss.
        text_loss_weight: float. Weight of the text loss.
        contrastive_loss_weight: float. Weight of InfoNCE; 0 turns it off.
        bag_of_words_loss_weight: float. Weight of the bag-of-words loss on
            every step's state (see `StoryModel`); 0 turns it off.
        dtype_policy: str. `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`.
    """

    image_encoder: str = "ResNet50"
    image_weights: Optional[str] = "imagenet"
    image_encoder_options: dict = dataclasses.field(default_factory=dict)
    freeze_image_encoder: bool = True
    image_batch_norm_momentum: float = 0.9
    text_encoder: str = "tiny"
    tiny_text_layers: int = 2
    tiny_text_hidden_dim: int = 64
    tiny_text_heads: int = 2
    tiny_text_intermediate_dim: Optional[int] = None
    tiny_text_dropout: float = 0.1
    num_frozen_text_layers: int = 0
    embedding_dim: int = 256
    fusion_dim: int = 256
    temporal_model: str = "gru"
    temporal_units: int = 512
    temporal_num_layers: int = 2
    temporal_num_heads: int = 4
    decoder_filters: int = 256
    decoder_refinement_filters: int = 32
    image_decoder_residual: bool = True
    text_decoder_embedding_dim: int = 256
    text_decoder_units: int = 512
    text_decoder_attention_heads: int = 4
    modalities: str = "both"
    contrastive_head: bool = True
    contrastive_text_pooling: str = "cls"
    image_memory: bool = True
    image_loss: str = "mse"
    image_loss_weight: float = 1.0
    text_loss_weight: float = 1.0
    contrastive_loss_weight: float = 0.1
    bag_of_words_loss_weight: float = 0.0
    dtype_policy: str = "float32"

    def __post_init__(self):
        check_field_types(self, "model")
        choices = {
            "temporal_model": TEMPORAL_MODELS,
            "modalities": MODALITIES,
            "contrastive_text_pooling": TEXT_POOLINGS,
            "image_loss": IMAGE_LOSSES,
            "dtype_policy": DTYPE_POLICIES,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"model.{name} must be one of {valid}; got {getattr(self, name)!r}."
                )
        for name in (
            "embedding_dim",
            "fusion_dim",
            "temporal_units",
            "decoder_filters",
            "decoder_refinement_filters",
            "text_decoder_embedding_dim",
            "text_decoder_units",
            "tiny_text_layers",
            "tiny_text_hidden_dim",
            "tiny_text_heads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be positive; got {getattr(self, name)}.")
        if self.tiny_text_intermediate_dim is not None and self.tiny_text_intermediate_dim < 1:
            raise ValueError(
                "model.tiny_text_intermediate_dim must be positive; "
                f"got {self.tiny_text_intermediate_dim}."
            )
        if not 0 <= self.image_batch_norm_momentum < 1:
            raise ValueError(
                "model.image_batch_norm_momentum must be in [0, 1); "
                f"got {self.image_batch_norm_momentum}."
            )
        for name in (
            "image_loss_weight",
            "text_loss_weight",
            "contrastive_loss_weight",
            "bag_of_words_loss_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0; got {getattr(self, name)}.")
