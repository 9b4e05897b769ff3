"""Settings of the story model: encoders, fusion, decoders, losses, precision."""

import dataclasses
from typing import Optional

from kstory.config_checks import check_at_least
from kstory.config_checks import check_choices
from kstory.models.backbone_config import BackboneConfig
from kstory.models.story_model import IMAGE_LOSSES

DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
LOSS_WEIGHTS = (
    "image_loss_weight",
    "text_loss_weight",
    "contrastive_loss_weight",
    "bag_of_words_loss_weight",
    "grounding_loss_weight",
)


@dataclasses.dataclass
class ModelConfig(BackboneConfig):
    """The architecture and loss settings of a `StoryModel`.

    The architecture of the backbone is every `BackboneConfig` field
    (`model.embedding_dim`, `model.temporal_units`, ...), inherited with its
    default and documented there. Image size, caption lengths and vocabulary
    come from the data config and the tokenizer, so they cannot disagree with
    the pipeline.

    Args:
        image_encoder: str. A `keras.applications` name (`ResNet50`,
            `MobileNetV3Small`, ...).
        image_weights: str. `"imagenet"` (needs network or the Keras cache),
            `"none"` (random), or a local weights file (`.weights.h5` or a
            legacy no-top `.h5`).
        image_encoder_options: dict. Further keyword arguments of the
            `keras.applications` constructor, e.g. `{"minimalistic": True}`
            or `{"alpha": 0.75}` for the MobileNets.
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
        image_loss: str. `"mse"` or `"mse+l1"`.
        image_loss_weight: float. Weight of the image loss.
        text_loss_weight: float. Weight of the text loss.
        contrastive_loss_weight: float. Weight of InfoNCE; 0 turns it off.
        bag_of_words_loss_weight: float. Weight of the bag-of-words loss on
            every step's state (see `StoryModel`); 0 turns it off.
        grounding_loss_weight: float. Weight of the grounding loss (with
            `grounding_head`).
        dtype_policy: str. `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`.
    """

    SECTION = "model"

    image_encoder: str = "ResNet50"
    image_weights: Optional[str] = "imagenet"
    image_encoder_options: dict = dataclasses.field(default_factory=dict)
    image_batch_norm_momentum: float = 0.9
    text_encoder: str = "tiny"
    tiny_text_layers: int = 2
    tiny_text_hidden_dim: int = 64
    tiny_text_heads: int = 2
    tiny_text_intermediate_dim: Optional[int] = None
    tiny_text_dropout: float = 0.1
    image_loss: str = "mse"
    image_loss_weight: float = 1.0
    text_loss_weight: float = 1.0
    contrastive_loss_weight: float = 0.1
    bag_of_words_loss_weight: float = 0.0
    grounding_loss_weight: float = 1.0
    dtype_policy: str = "float32"

    def __post_init__(self):
        super().__post_init__()
        check_choices(self, "model", {"image_loss": IMAGE_LOSSES, "dtype_policy": DTYPE_POLICIES})
        tiny_text = ("tiny_text_layers", "tiny_text_hidden_dim", "tiny_text_heads")
        check_at_least(self, "model", tiny_text, 1)
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
        check_at_least(self, "model", LOSS_WEIGHTS, 0)

    def loss_settings(self):
        """The loss settings of this config as `StoryModel` keyword arguments."""
        return {name: getattr(self, name) for name in ("image_loss",) + LOSS_WEIGHTS}
