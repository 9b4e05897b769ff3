"""Encodes the caption of every story step with one keras-hub backbone."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kstory")
class StepTextEncoder(keras.layers.Layer):
    """Runs a keras-hub text backbone over each step: [CLS] vectors and token states.

    keras-hub backbones take a dict, which `TimeDistributed` cannot wrap, so the
    steps are folded into the batch: `(batch, steps, length)` ->
    `(batch * steps, length)` -> backbone -> `(batch, steps, length, hidden_dim)`.
    The call returns `(cls_vectors, token_states)`: the [CLS] vector of each
    step, `(batch, steps, hidden_dim)`, and all token states.
    The embeddings and the lowest `num_frozen_layers` transformer layers are
    frozen; this is re-applied on load, since a backbone's config does not
    record it.

    Args:
        backbone: a keras-hub BERT-family backbone (`DistilBertBackbone`,
            `BertBackbone`) returning the sequence output.
        num_frozen_layers: int. Transformer layers frozen from the bottom, with
            the embeddings. 0 freezes only the embeddings; -1 freezes nothing.

    Example:
    >>> backbone = keras_hub.models.DistilBertBackbone(
    ...     vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=8)
    >>> encoder = StepTextEncoder(backbone, num_frozen_layers=1)
    >>> cls_vectors, token_states = encoder(
    ...     np.ones((2, 4, 8), "int32"), np.ones((2, 4, 8), "bool"))
    >>> keras.ops.shape(cls_vectors), keras.ops.shape(token_states)
    ((2, 4, 16), (2, 4, 8, 16))
    """

    def __init__(self, backbone, num_frozen_layers=0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_frozen_layers = num_frozen_layers
        num_layers = getattr(backbone, "num_layers", None)
        if num_layers is not None and num_frozen_layers > num_layers:
            raise ValueError(
                f"num_frozen_layers={num_frozen_layers} exceeds the backbone's "
                f"{num_layers} transformer layers."
            )
        self.takes_segment_ids = "segment_ids" in backbone.input
        self.apply_freezing()

    def apply_freezing(self):
        """Freezes the embeddings and the lowest `num_frozen_layers` layers."""
        if self.num_frozen_layers < 0:
            return
        frozen_names = {f"transformer_layer_{i}" for i in range(self.num_frozen_layers)}
        for layer in self.backbone.layers:
            if "embedding" in layer.name or layer.name in frozen_names:
                layer.trainable = False

    def build(self, token_ids_shape, padding_mask_shape=None):
        # The wrapped keras-hub backbone is a functional model: built already.
        self.built = True

    def call(self, token_ids, padding_mask):
        num_steps, length = token_ids.shape[1], token_ids.shape[2]
        flat_inputs = {
            "token_ids": ops.reshape(token_ids, (-1, length)),
            "padding_mask": ops.reshape(padding_mask, (-1, length)),
        }
        if self.takes_segment_ids:
            flat_inputs["segment_ids"] = ops.zeros_like(flat_inputs["token_ids"])
        outputs = self.backbone(flat_inputs)
        if isinstance(outputs, dict):
            outputs = outputs["sequence_output"]
        hidden_dim = outputs.shape[-1]
        token_states = ops.reshape(outputs, (-1, num_steps, length, hidden_dim))
        return token_states[:, :, 0, :], token_states

    def compute_output_shape(self, token_ids_shape, padding_mask_shape=None):
        hidden_dim = self.backbone.hidden_dim
        return (*token_ids_shape[:2], hidden_dim), (*token_ids_shape, hidden_dim)

    def compute_output_spec(self, token_ids, padding_mask, training=None):
        # The wrapped backbone's dtype, whatever this layer's policy.
        return tuple(
            keras.KerasTensor(shape, dtype=self.backbone.compute_dtype)
            for shape in self.compute_output_shape(token_ids.shape)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.layers.serialize(self.backbone),
            "num_frozen_layers": self.num_frozen_layers,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)
