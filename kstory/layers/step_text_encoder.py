"""Encodes the caption of every story step with one keras-hub backbone."""

import functools

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

    The frozen layers always run in inference mode (no dropout), as Keras
    runs a frozen `BatchNormalization`: they are a fixed feature extractor,
    so their output for a caption is the same in every epoch and can be
    cached (`frozen_states`, `kstory.data.text_cache`). The call then takes
    those cached states as `frozen_states` and runs only the trainable layers.

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

    def build(self, token_ids_shape, padding_mask_shape=None, frozen_states_shape=None):
        # The wrapped keras-hub backbone is a functional model: built already.
        self.built = True

    @property
    def _layer_names(self):
        return [f"transformer_layer_{i}" for i in range(getattr(self.backbone, "num_layers", 0))]

    @property
    def splits(self):
        """Whether the frozen layers run apart from the trainable ones: some
        are frozen, and the backbone names its layers `transformer_layer_<i>`
        (BERT-family keras-hub backbones do)."""
        names = {layer.name for layer in self.backbone.layers}
        layer_names = self._layer_names
        return self.num_frozen_layers >= 0 and bool(layer_names) and set(layer_names) <= names

    @property
    def caches(self):
        """Whether caching the frozen states saves work: a transformer layer is frozen."""
        return self.splits and self.num_frozen_layers >= 1

    # A cached property sets the instance's __dict__ directly, so the model
    # is not tracked: its variables are the backbone's, saved with it.
    @functools.cached_property
    def frozen_stack(self):
        """The embeddings and the frozen layers, over the backbone's own layers."""
        if self.num_frozen_layers == 0:
            output = self.backbone.get_layer("transformer_layer_0").input[0]
        else:
            output = self.backbone.get_layer(self._layer_names[self.num_frozen_layers - 1]).output
        return keras.Model(self.backbone.input, output, name="frozen_text_stack")

    def _flat_inputs(self, token_ids, padding_mask):
        length = token_ids.shape[-1]
        flat_inputs = {
            "token_ids": ops.reshape(token_ids, (-1, length)),
            "padding_mask": ops.reshape(padding_mask, (-1, length)),
        }
        if self.takes_segment_ids:
            flat_inputs["segment_ids"] = ops.zeros_like(flat_inputs["token_ids"])
        return flat_inputs

    def frozen_states(self, token_ids, padding_mask):
        """The frozen layers' output `(batch, steps, length, hidden_dim)`, in
        inference mode: what `kstory.data.text_cache` stores."""
        if not self.splits:
            raise ValueError(
                "The text encoder has no frozen layers to run apart "
                f"(num_frozen_layers={self.num_frozen_layers})."
            )
        states = self.frozen_stack(self._flat_inputs(token_ids, padding_mask), training=False)
        return ops.reshape(states, (*token_ids.shape[:3], states.shape[-1]))

    def call(self, token_ids, padding_mask, frozen_states=None, training=None):
        num_steps, length = token_ids.shape[1], token_ids.shape[2]
        flat_inputs = self._flat_inputs(token_ids, padding_mask)
        if not self.splits:
            outputs = self.backbone(flat_inputs, training=training)
            if isinstance(outputs, dict):
                outputs = outputs["sequence_output"]
        else:
            if frozen_states is None:
                outputs = self.frozen_stack(flat_inputs, training=False)
            else:
                outputs = ops.reshape(frozen_states, (-1, length, frozen_states.shape[-1]))
                outputs = ops.cast(outputs, self.backbone.compute_dtype)
            for name in self._layer_names[max(self.num_frozen_layers, 0) :]:
                outputs = self.backbone.get_layer(name)(
                    outputs, padding_mask=flat_inputs["padding_mask"], training=training
                )
        hidden_dim = outputs.shape[-1]
        token_states = ops.reshape(outputs, (-1, num_steps, length, hidden_dim))
        return token_states[:, :, 0, :], token_states

    def compute_output_shape(self, token_ids_shape, padding_mask_shape=None, *args):
        hidden_dim = self.backbone.hidden_dim
        return (*token_ids_shape[:2], hidden_dim), (*token_ids_shape, hidden_dim)

    def compute_output_spec(self, token_ids, padding_mask, frozen_states=None, training=None):
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
