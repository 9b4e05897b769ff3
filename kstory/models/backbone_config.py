"""The architecture settings of a `StoryBackbone`, defined once.

`StoryBackbone` takes these fields as keyword arguments and returns them from
`get_config`; `ModelConfig` inherits them as `model.*` config keys. A default
changed here is changed everywhere.
"""

import dataclasses

from kstory.config_checks import check_at_least
from kstory.config_checks import check_choices
from kstory.config_checks import check_field_types

TEMPORAL_MODELS = ("gru", "transformer")
MODALITIES = ("both", "images", "captions")
TEXT_POOLINGS = ("cls", "mean")

_POSITIVE = (
    "embedding_dim",
    "fusion_dim",
    "temporal_units",
    "temporal_num_layers",
    "temporal_num_heads",
    "decoder_filters",
    "decoder_refinement_filters",
    "text_decoder_embedding_dim",
    "text_decoder_units",
)


@dataclasses.dataclass
class BackboneConfig:
    """What a `StoryBackbone` is built with, besides its two encoders and the
    sizes that the data and the tokenizer give.

    Args:
        freeze_image_encoder: bool. Keep the image encoder's weights fixed.
        num_frozen_text_layers: int. Lower text transformer layers frozen, with
            the embeddings; -1 freezes nothing.
        embedding_dim: int. Size of the shared image/text embedding (256 in
            the paper).
        fusion_dim: int. Size of each fused step.
        temporal_model: str. `"gru"` or `"transformer"`.
        temporal_units: int. Size of the story state.
        temporal_num_layers: int. Transformer layers (transformer only).
        temporal_num_heads: int. Attention heads (transformer only).
        decoder_filters: int. Channels of the image decoder's first (4x4)
            feature map.
        decoder_refinement_filters: int. Channels of the residual image
            decoder's full-resolution convolutions.
        image_decoder_residual: bool. Predict the next frame as a change to
            the last context frame (see `ImageDecoder`).
        text_decoder_embedding_dim: int. Token embedding size of the decoder.
        text_decoder_units: int. GRU units of the text decoder.
        text_decoder_attention_heads: int. Heads with which the text decoder
            attends over the context captions' tokens; 0 for a plain GRU
            decoder.
        modalities: str. `"both"`; or, for the fusion ablation, `"images"`
            (the captions' embeddings and tokens are zeroed before fusion)
            or `"captions"` (the images' embeddings are zeroed, and the image
            decoder, which must then not be residual, sees no frame).
        contrastive_head: bool. Fuse each step through projections of its
            own: the embeddings that the contrastive loss aligns are then a
            head beside the fusion path (SimCLR's projection head), not its
            input.
        contrastive_text_pooling: str. What the contrastive text embedding
            projects: the caption's `"cls"` vector (the fusion's input too),
            or the `"mean"` of its token states, which carries every word
            from the first step (see `StoryBackbone.embed_caption`).
        image_memory: bool. With an attending text decoder, its memory also
            holds one slot per context image (see `ContextMemory`).
        grounding_head: bool. Predict which of the story's entities appear
            in the next frame (`GroundingHead`): the backbone then takes
            `context_entities` and returns `entity_logits`
            (docs/grounding.md).
    """

    # Error messages name a setting in this config section (`ModelConfig`: "model").
    SECTION = ""

    freeze_image_encoder: bool = True
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
    grounding_head: bool = False

    def __post_init__(self):
        section = self.SECTION
        check_field_types(self, section)
        check_choices(
            self,
            section,
            {
                "temporal_model": TEMPORAL_MODELS,
                "modalities": MODALITIES,
                "contrastive_text_pooling": TEXT_POOLINGS,
            },
        )
        check_at_least(self, section, _POSITIVE, 1)
        check_at_least(self, section, ("text_decoder_attention_heads",), 0)
        if self.modalities == "captions" and self.image_decoder_residual:
            prefix = f"{section}." if section else ""
            raise ValueError(
                f"A captions-only model cannot copy the last frame: set "
                f"{prefix}image_decoder_residual=False with {prefix}modalities='captions'."
            )

    @classmethod
    def field_names(cls):
        """The settings' names, in definition order."""
        return tuple(field.name for field in dataclasses.fields(BackboneConfig))

    def backbone_settings(self):
        """The `BackboneConfig` fields of this config (of a `ModelConfig`
        too) as `StoryBackbone` keyword arguments."""
        return {name: getattr(self, name) for name in BackboneConfig.field_names()}
