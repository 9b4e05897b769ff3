"""Self-attention over the story steps, an alternative to the GRU."""

import keras
import keras_hub
from keras import ops


@keras.saving.register_keras_serializable(package="kstory")
class TemporalTransformer(keras.layers.Layer):
    """Transformer encoder over the fused steps; the last step is the story state.

    The original work named self-attention over steps as its future work; the
    GRU stays kstory's default. Steps get learned position embeddings and attend
    to each other; the last step's output, normalised, is the story state.

    Args:
        units: int. Size of the story state.
        num_layers: int. Transformer encoder layers.
        num_heads: int. Attention heads.
        intermediate_dim: int. Feed-forward width.
        max_steps: int. Most steps (positions) supported.
        dropout: float. Dropout in the encoder layers.
        return_sequences: bool. Return every step's state `(batch, steps,
            units)`, each step attending only to itself and the steps
            before it (a causal mask, so that step t's state can be asked for
            step t+1), instead of the last step's alone.

    Example:
    >>> keras.ops.shape(TemporalTransformer(units=16, num_heads=2)(np.zeros((2, 4, 8))))
    (2, 16)
    """

    def __init__(
        self,
        units,
        num_layers=2,
        num_heads=4,
        intermediate_dim=None,
        max_steps=16,
        dropout=0.0,
        return_sequences=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.max_steps = max_steps
        self.dropout = dropout
        self.return_sequences = return_sequences
        self.input_projection = keras.layers.Dense(
            units, dtype=self.dtype_policy, name="input_projection"
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            max_steps, dtype=self.dtype_policy, name="position_embedding"
        )
        self.encoder_layers = [
            keras_hub.layers.TransformerEncoder(
                intermediate_dim or 2 * units,
                num_heads,
                dropout=dropout,
                normalize_first=True,
                dtype=self.dtype_policy,
                name=f"encoder_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.output_norm = keras.layers.LayerNormalization(
            dtype=self.dtype_policy, name="output_norm"
        )

    def build(self, input_shape):
        self.input_projection.build(input_shape)
        shape = (*input_shape[:-1], self.units)
        self.position_embedding.build(shape)
        for layer in self.encoder_layers:
            layer.build(shape)
        self.output_norm.build(shape)

    def call(self, steps, training=False):
        x = self.input_projection(steps)
        x = x + self.position_embedding(x)
        mask = None
        if self.return_sequences:
            steps = x.shape[1]
            mask = ops.broadcast_to(
                ops.tril(ops.ones((steps, steps), "int32"))[None], (ops.shape(x)[0], steps, steps)
            )
        for layer in self.encoder_layers:
            x = layer(x, attention_mask=mask, training=training)
        if self.return_sequences:
            return self.output_norm(x)
        return self.output_norm(x[:, -1, :])

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (*input_shape[:-1], self.units)
        return (input_shape[0], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "max_steps": self.max_steps,
            "dropout": self.dropout,
            "return_sequences": self.return_sequences,
        }
