"""The story architecture: encoders, fusion, temporal model and two decoders."""

import keras
import keras_hub
from keras import ops

from kstory.data.entities import num_entity_slots
from kstory.layers.context_memory import ContextMemory
from kstory.layers.float32_orthogonal import FLOAT32_ORTHOGONAL
from kstory.layers.grounding_head import GroundingHead
from kstory.layers.image_decoder import ImageDecoder
from kstory.layers.image_preprocessing import ImagePreprocessing
from kstory.layers.step_text_encoder import StepTextEncoder
from kstory.layers.temporal_transformer import TemporalTransformer
from kstory.layers.text_decoder import TextDecoder
from kstory.models.backbone_config import BackboneConfig


def masked_mean(states, mask):
    """Mean of `states` `(..., length, dim)` over the positions where `mask`
    `(..., length)` is true; zeros for a row with none."""
    mask = ops.cast(mask, states.dtype)[..., None]
    return ops.sum(states * mask, axis=-2) / ops.maximum(ops.sum(mask, axis=-2), 1)


@keras.saving.register_keras_serializable(package="kstory")
class StoryBackbone(keras_hub.models.Backbone):
    """Four image-text steps in; embeddings, story state and next frame out.

    Each step's image goes through a frozen `keras.applications` encoder
    (one call over all steps' frames, time folded into the batch) and a
    projection; each step's
    caption through a keras-hub text backbone, whose [CLS] vector is projected
    to the same size. The two embeddings of a step are fused by
    `TimeDistributed` dense layers, and a GRU (or a transformer) over the
    steps gives the story state. From it, a transposed-convolution decoder
    draws the next image and a GRU decoder predicts the next caption's tokens
    (teacher-forced on `decoder_token_ids`). The image decoder also reads
    the next caption (`embed_caption`, its token states pooled): the true one
    in training, the generated one at inference (`StoryModel.predict_next`),
    so the frame follows what its caption says.

    The backbone is architecture only: it has no loss. See `StoryModel`.

    Args:
        image_encoder: `keras.Model`. A `keras.applications` model built with
            `include_top=False, pooling="avg"` for `(image_size, image_size, 3)`.
        text_backbone: a keras-hub BERT-family backbone.
        vocabulary_size: int. Decoder vocabulary; the tokenizer's size.
        image_size: int. Side of the context images.
        target_image_size: int. Side of the predicted image.
        num_context_steps: int. Steps per story window.
        sequence_length: int. Tokens per context caption.
        image_preprocessing: str. Input mode of `image_encoder` (see
            `ImagePreprocessing`).
        pad_token_id: int. The padding id of `decoder_token_ids`: the next
            caption that the image decoder reads is masked with it.
        image_resize: str. How frames of another shape were made square
            (`data.image_resize`): kept so that the feature cache and serving
            resize as training did.
        entity_slots: int. Slots per entity kind of `context_entities`
            (with `grounding_head`).
        dtype: str or `keras.DTypePolicy`. Of every layer and output;
            `StoryModel` reads the outputs as float32.
        **kwargs: the architecture, every field of `BackboneConfig`
            (`embedding_dim`, `temporal_model`, ...; each defaults as
            there), and the `keras.Model` arguments (`name`, ...).

    Example:
    >>> backbone = StoryBackbone(
    ...     image_encoder=keras.Sequential([
    ...         keras.Input((32, 32, 3)),
    ...         keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
    ...         keras.layers.GlobalAveragePooling2D()]),
    ...     text_backbone=keras_hub.models.DistilBertBackbone(
    ...         vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
    ...         intermediate_dim=32, max_sequence_length=8),
    ...     vocabulary_size=50, image_size=32, target_image_size=32,
    ...     sequence_length=8, image_preprocessing="none")
    >>> outputs = backbone.predict({
    ...     "images": np.zeros((2, 4, 32, 32, 3), "uint8"),
    ...     "token_ids": np.ones((2, 4, 8), "int32"),
    ...     "padding_mask": np.ones((2, 4, 8), "int32"),
    ...     "decoder_token_ids": np.ones((2, 6), "int32")}, verbose=0)
    >>> outputs["next_token_logits"].shape
    (2, 6, 50)
    """

    def __init__(
        self,
        image_encoder,
        text_backbone,
        vocabulary_size,
        image_size=64,
        target_image_size=64,
        num_context_steps=4,
        sequence_length=32,
        image_preprocessing="tf",
        pad_token_id=0,
        image_resize="squash",
        entity_slots=8,
        dtype=None,
        **kwargs,
    ):
        settings = BackboneConfig(
            **{name: kwargs.pop(name) for name in BackboneConfig.field_names() if name in kwargs}
        )
        # === Config === (set first: building the graph reads them)
        for name, value in settings.backbone_settings().items():
            setattr(self, name, value)
        self.vocabulary_size = vocabulary_size
        self.image_size = image_size
        self.target_image_size = target_image_size
        self.num_context_steps = num_context_steps
        self.sequence_length = sequence_length
        self.image_preprocessing_mode = image_preprocessing
        self.pad_token_id = pad_token_id
        self.image_resize = image_resize
        self.entity_slots = entity_slots
        # === Layers ===
        self.image_encoder = image_encoder
        self._build_encoders(text_backbone, dtype)
        self._build_fusion_and_decoders(dtype)

        # === Functional Model ===
        inputs = {
            "images": keras.Input(
                (num_context_steps, image_size, image_size, 3), dtype="uint8", name="images"
            ),
            "token_ids": keras.Input(
                (num_context_steps, sequence_length), dtype="int32", name="token_ids"
            ),
            "padding_mask": keras.Input(
                (num_context_steps, sequence_length), dtype="int32", name="padding_mask"
            ),
            "decoder_token_ids": keras.Input((None,), dtype="int32", name="decoder_token_ids"),
        }
        if self.grounding_head:
            inputs["context_entities"] = keras.Input(
                (num_context_steps, num_entity_slots(entity_slots)),
                dtype="int32",
                name="context_entities",
            )
        super().__init__(inputs=inputs, outputs=self.compute_outputs(inputs), dtype=dtype, **kwargs)
        self.apply_freezing()

    def _build_encoders(self, text_backbone, dtype):
        """The image and text encoders and their projections."""
        self.image_preprocessing = ImagePreprocessing(
            self.image_preprocessing_mode, dtype=dtype, name="image_preprocessing"
        )
        self.image_projection = keras.layers.Dense(
            self.embedding_dim, dtype=dtype, name="image_projection"
        )
        self.text_encoder = StepTextEncoder(
            text_backbone, self.num_frozen_text_layers, dtype=dtype, name="text_encoder"
        )
        self.text_projection = keras.layers.Dense(
            self.embedding_dim, dtype=dtype, name="text_projection"
        )
        self.image_fusion_projection = self.text_fusion_projection = None
        if self.contrastive_head:
            self.image_fusion_projection = keras.layers.Dense(
                self.embedding_dim, dtype=dtype, name="image_fusion_projection"
            )
            self.text_fusion_projection = keras.layers.Dense(
                self.embedding_dim, dtype=dtype, name="text_fusion_projection"
            )
        # What the image decoder reads of the next caption (`embed_caption`).
        self.caption_projection = keras.layers.Dense(
            self.embedding_dim, dtype=dtype, name="caption_projection"
        )

    def _build_fusion_and_decoders(self, dtype):
        """The fusion of each step, the temporal model and the two decoders."""
        self.fusion_concat = keras.layers.Concatenate(dtype=dtype, name="fusion_concat")
        self.fusion_dense = keras.layers.TimeDistributed(
            # Sublayers are named: an auto-generated name ("dense_19") depends
            # on what else the process built, and names key optimizer slots.
            keras.layers.Dense(
                self.fusion_dim, activation="gelu", dtype=dtype, name="fusion_projection"
            ),
            dtype=dtype,
            name="fusion_dense",
        )
        self.fusion_norm = keras.layers.TimeDistributed(
            keras.layers.LayerNormalization(dtype=dtype, name="fusion_layer_norm"),
            dtype=dtype,
            name="fusion_norm",
        )
        if self.temporal_model == "gru":
            self.temporal = keras.layers.GRU(
                self.temporal_units,
                return_sequences=True,
                recurrent_initializer=FLOAT32_ORTHOGONAL,
                dtype=dtype,
                name="temporal",
            )
        else:
            self.temporal = TemporalTransformer(
                self.temporal_units,
                num_layers=self.temporal_num_layers,
                num_heads=self.temporal_num_heads,
                max_steps=self.num_context_steps,
                return_sequences=True,
                dtype=dtype,
                name="temporal",
            )
        self.image_decoder = ImageDecoder(
            self.target_image_size,
            self.decoder_filters,
            residual=self.image_decoder_residual,
            refinement_filters=self.decoder_refinement_filters,
            dtype=dtype,
            name="image_decoder",
        )
        self.context_memory = None
        if self.text_decoder_attention_heads:
            self.context_memory = ContextMemory(
                self.text_decoder_units,
                self.num_context_steps,
                dtype=dtype,
                name="context_memory",
            )
        self.text_decoder = TextDecoder(
            self.vocabulary_size,
            self.text_decoder_embedding_dim,
            self.text_decoder_units,
            attention_heads=self.text_decoder_attention_heads,
            dtype=dtype,
            name="text_decoder",
        )
        self.grounding = None
        if self.grounding_head:
            self.grounding = GroundingHead(
                self.entity_slots, self.fusion_dim, dtype=dtype, name="grounding_head"
            )

    def apply_freezing(self):
        """Freezes the image encoder and the lower text layers, as configured.

        Called after construction: `Model.__init__(trainable=...)`, as run
        from a saved config, would otherwise unfreeze them.
        """
        self.image_encoder.trainable = not self.freeze_image_encoder
        self.text_encoder.apply_freezing()

    def compute_outputs(self, inputs, training=None):
        """The backbone's outputs, from frames or from cached image features.

        Builds the functional graph. `kstory.training.CachedFeatureTrainer`
        calls it with `image_features` `(batch, steps, features)`, the frozen
        image encoder's output, and `last_frames` `(batch, 2, size, size, 3)`,
        the last context frames at the output size (see
        `ImageDecoder.resize_frames`), in place of `images`. `training` is
        passed to the layers with dropout: a caller's `call` run statelessly
        (JAX) sets no call context for them to inherit.
        """
        encoded = self.encode(inputs, training=training)
        last_frames = inputs["last_frames"] if "image_features" in inputs else inputs["images"]
        outputs = {
            "image_embeddings": encoded["image_embeddings"],
            "text_embeddings": encoded["text_embeddings"],
            "story_state": encoded["story_state"],
            "step_states": encoded["step_states"],
            "next_image": self.predict_next_image(
                last_frames,
                encoded["story_state"],
                self.embed_caption(
                    inputs["decoder_token_ids"],
                    training=training,
                    frozen_states=inputs.get("caption_states"),
                ),
            ),
            "next_token_logits": self.text_decoder(
                inputs["decoder_token_ids"],
                encoded["story_state"],
                encoded.get("memory"),
                encoded.get("memory_mask"),
                training=training,
            ),
        }
        if self.grounding is not None:
            outputs["entity_logits"] = self.predict_entities(
                encoded, inputs.get("context_entities")
            )
        return outputs

    def predict_entities(self, encoded, context_entities=None):
        """The grounding head's `entity_logits` `(batch, num_slots + kinds)`
        from `encode`'s outputs (the step states and the last caption's text
        embedding); without `context_entities` (a story with no grounding
        tags), only the new-entity logits are unmasked."""
        step_states = encoded["step_states"]
        if context_entities is None:
            shape = (ops.shape(step_states)[0], self.num_context_steps)
            context_entities = ops.zeros((*shape, num_entity_slots(self.entity_slots)), "int32")
        return self.grounding(step_states, context_entities, encoded["text_embeddings"][:, -1, :])

    def encode(self, inputs, training=None):
        """Context steps -> dict of `image_embeddings`, `text_embeddings`,
        `story_state`, `step_states` (the state after each step; the last is
        the story state), and the decoder's `memory` / `memory_mask` when it attends.

        Takes `images`, or cached `image_features` (see `compute_outputs`). Runs
        eagerly for generation.
        """
        if "image_features" in inputs:
            features = inputs["image_features"]
        else:
            # All steps' frames in one encoder call at batch x steps, rather
            # than one call per step (TimeDistributed's loop over a static
            # time axis): fewer, larger convolutions.
            images = inputs["images"]
            frames = ops.reshape(images, (-1, *images.shape[2:]))
            features = self.image_features(frames)
            features = ops.reshape(features, (-1, images.shape[1], features.shape[-1]))
        image_embeddings = self.image_projection(features)
        cls_vectors, token_states = self.text_encoder(
            inputs["token_ids"],
            inputs["padding_mask"],
            frozen_states=inputs.get("text_states"),
            training=training,
        )
        text_embeddings = self.text_projection(
            self._contrastive_text_vectors(cls_vectors, token_states, inputs["padding_mask"])
        )
        image_steps, text_steps = image_embeddings, text_embeddings
        if self.contrastive_head:
            image_steps = self.image_fusion_projection(features)
            text_steps = self.text_fusion_projection(cls_vectors)
        # The fusion ablation: a modality left out is zeroed (so every
        # variable still gets a gradient, of zero, on every backend).
        caption_mask = inputs["padding_mask"]
        if self.modalities == "captions":
            image_embeddings, image_steps = image_embeddings * 0, image_steps * 0
        elif self.modalities == "images":
            text_embeddings, text_steps = text_embeddings * 0, text_steps * 0
            token_states = token_states * 0
            # And the captions' lengths: through the attention mask they
            # would still move the caption decoder.
            caption_mask = ops.ones_like(caption_mask)
        fused = self.fusion_concat([image_steps, text_steps])
        # Every step's state, each from the steps up to it (the GRU runs
        # forwards; the transformer is causal): the story state is the last.
        step_states = self.temporal(self.fusion_norm(self.fusion_dense(fused)), training=training)
        story_state = step_states[:, -1, :]
        encoded = {"image_embeddings": image_embeddings, "text_embeddings": text_embeddings}
        if self.context_memory is not None:
            memory, memory_mask = self.context_memory(
                token_states,
                caption_mask,
                image_steps if self.image_memory else None,
                training=training,
            )
            encoded["memory"], encoded["memory_mask"] = memory, memory_mask
        encoded["story_state"], encoded["step_states"] = story_state, step_states
        return encoded

    def embed_images(self, images):
        """Single frames `(batch, H, W, 3)`, uint8 or 0-255 floats -> image
        embeddings `(batch, embedding_dim)`, as for each context step."""
        return self.image_projection(self.image_features(images))

    def image_features(self, images):
        """Single frames `(batch, H, W, 3)` -> the image encoder's features,
        what the frozen-feature cache stores."""
        return self.image_encoder(self.image_preprocessing(images))

    def embed_texts(self, token_ids, padding_mask, training=None):
        """Single captions' `token_ids` / `padding_mask` `(batch, length)` ->
        text embeddings `(batch, embedding_dim)`, as for each context step."""
        cls_vectors, token_states = self.text_encoder(
            token_ids[:, None, :], padding_mask[:, None, :], training=training
        )
        vectors = self._contrastive_text_vectors(cls_vectors, token_states, padding_mask[:, None])
        return self.text_projection(vectors[:, 0, :])

    def _contrastive_text_vectors(self, cls_vectors, token_states, padding_mask):
        """What `text_projection` reads (`contrastive_text_pooling`)."""
        if self.contrastive_text_pooling == "cls":
            return cls_vectors
        return masked_mean(token_states, padding_mask)

    def embed_caption(self, token_ids, training=None, frozen_states=None):
        """The next caption as the image decoder reads it: `(batch, embedding_dim)`.

        The masked mean of the text encoder's token states, through a
        projection of its own (`caption_projection`). `token_ids` are laid out
        as `decoder_token_ids` in training and as `StoryModel.generate` returns
        them: `[CLS]`, the caption, `[SEP]`, padding; they are cut to
        `sequence_length`.

        Not the [CLS] embedding of `embed_texts`: with a text encoder trained
        from scratch, [CLS] carried the caption's scene word on some seeds and
        not at all on others (a linear probe at chance), and the frame then
        never learnt the scene. Each token's state keeps its own word, so their
        mean carries every word from the first step (docs/fusion.md).
        """
        token_ids, padding_mask = self.caption_tokens(token_ids)
        if frozen_states is not None:
            frozen_states = frozen_states[:, None]
        _, token_states = self.text_encoder(
            token_ids[:, None, :],
            padding_mask[:, None, :],
            frozen_states=frozen_states,
            training=training,
        )
        return self.caption_projection(masked_mean(token_states[:, 0], padding_mask))

    def caption_tokens(self, token_ids):
        """`(token_ids, padding_mask)` of the next caption as `embed_caption`
        encodes it: cut to `sequence_length`, padding masked."""
        token_ids = token_ids[:, : self.sequence_length]
        return token_ids, ops.cast(ops.not_equal(token_ids, self.pad_token_id), "int32")

    def predict_next_image(self, images, story_state, caption_embedding):
        """The next frame from the story state, the embedding of the next
        caption and the context `images` (or their last frames at the output
        size).

        The image decoder draws the caption it illustrates
        (`caption_embedding`, see `embed_caption`): in training the true next
        caption, at inference the generated one. The caption says what the
        story state alone did not learn to carry, such as an announced change
        of scene (docs/fusion.md).
        """
        condition = ops.concatenate(
            [story_state, ops.cast(caption_embedding, story_state.dtype)], axis=-1
        )
        return self.image_decoder(condition, images[:, -min(2, images.shape[1]) :])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_encoder": keras.layers.serialize(self.image_encoder),
                "text_backbone": keras.layers.serialize(self.text_encoder.backbone),
                "vocabulary_size": self.vocabulary_size,
                "image_size": self.image_size,
                "target_image_size": self.target_image_size,
                "num_context_steps": self.num_context_steps,
                "sequence_length": self.sequence_length,
                "image_preprocessing": self.image_preprocessing_mode,
                **{name: getattr(self, name) for name in BackboneConfig.field_names()},
                "pad_token_id": self.pad_token_id,
                "image_resize": self.image_resize,
                "entity_slots": self.entity_slots,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("image_encoder", "text_backbone"):
            config[name] = keras.layers.deserialize(config[name])
        return cls(**config)
