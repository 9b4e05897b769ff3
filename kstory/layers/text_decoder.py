"""An autoregressive GRU decoder of token ids, conditioned on the story state."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kstory")
class TextDecoder(keras.layers.Layer):
    """Predicts the next caption's tokens from the story state.

    The story state sets the GRU's initial state and, projected, is joined to
    every input token embedding, so the condition cannot fade over long
    captions. Training is teacher-forced on the whole sequence (`call`);
    generation runs `step` one token at a time with the GRU state as the cache,
    so each new token costs one cell update, not a pass over the prefix.

    A GRU, not cross-attention: the story state is a single vector (the GRU
    over four steps summarises them), so there is nothing to attend over, and
    the recurrent cache is constant-size.

    Args:
        vocabulary_size: int. Size of the token vocabulary.
        embedding_dim: int. Size of the token and condition embeddings.
        units: int. GRU units.

    Example:
    >>> decoder = TextDecoder(vocabulary_size=50, embedding_dim=8, units=16)
    >>> decoder(np.ones((2, 5), "int32"), np.zeros((2, 12))).shape
    (2, 5, 50)
    """

    def __init__(self, vocabulary_size, embedding_dim=256, units=512, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, embedding_dim, dtype=self.dtype_policy, name="token_embedding"
        )
        self.initial_state_projection = keras.layers.Dense(
            units, activation="tanh", dtype=self.dtype_policy, name="initial_state_projection"
        )
        self.condition_projection = keras.layers.Dense(
            embedding_dim, dtype=self.dtype_policy, name="condition_projection"
        )
        self.gru = keras.layers.GRU(
            units, return_sequences=True, dtype=self.dtype_policy, name="gru"
        )
        self.logits = keras.layers.Dense(vocabulary_size, dtype="float32", name="logits")

    def build(self, token_ids_shape, story_state_shape):
        batch = token_ids_shape[0]
        self.token_embedding.build(token_ids_shape)
        self.initial_state_projection.build(story_state_shape)
        self.condition_projection.build(story_state_shape)
        self.gru.build((batch, None, 2 * self.embedding_dim))
        self.logits.build((batch, None, self.units))

    def initial_cache(self, story_state):
        """The generation cache: the GRU state and the projected condition."""
        return (
            self.initial_state_projection(story_state),
            self.condition_projection(story_state),
        )

    def call(self, token_ids, story_state):
        state, condition = self.initial_cache(story_state)
        embedded = self.token_embedding(token_ids)
        condition = ops.broadcast_to(
            ops.expand_dims(condition, 1), ops.shape(embedded)[:-1] + (self.embedding_dim,)
        )
        hidden = self.gru(ops.concatenate([embedded, condition], axis=-1), initial_state=state)
        return self.logits(hidden)

    def step(self, token_ids, cache):
        """Advances one token: `(batch,)` ids -> `(batch, vocabulary)` logits, new cache."""
        state, condition = cache
        embedded = self.token_embedding(token_ids)
        hidden, _ = self.gru.cell(ops.concatenate([embedded, condition], axis=-1), state)
        return self.logits(hidden), (hidden, condition)

    def compute_output_shape(self, token_ids_shape, story_state_shape=None):
        return (*token_ids_shape, self.vocabulary_size)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
        }
