"""An autoregressive GRU decoder of token ids, conditioned on the story state."""

import keras
import keras_hub
from keras import ops

from kstory.layers.float32_orthogonal import FLOAT32_ORTHOGONAL


@keras.saving.register_keras_serializable(package="kstory")
class TextDecoder(keras.layers.Layer):
    """Predicts the next caption's tokens from the story state.

    The story state sets the GRU's initial state and, projected, is joined to
    every input token embedding, so the condition cannot fade over long
    captions. Training is teacher-forced on the whole sequence (`call`);
    generation runs `step` one token at a time with the GRU state as the cache,
    so each new token costs one cell update, not a pass over the prefix.

    With `attention_heads > 0`, each GRU output also attends (Luong-style,
    after the recurrence) over a memory of the context captions' token states,
    and the logits read both. Captions of a story repeat names, objects and
    places from step to step; attention lets the decoder copy them instead of
    squeezing every word through the single story-state vector. The GRU keeps
    a constant-size cache; the memory is fixed per story, so generation
    projects its keys and values once, into the cache
    (`keras_hub.layers.CachedMultiHeadAttention`), and each step projects
    only its query.

    Args:
        vocabulary_size: int. Size of the token vocabulary.
        embedding_dim: int. Size of the token and condition embeddings.
        units: int. GRU units, and the size of the memory vectors.
        attention_heads: int. Heads attending over the memory; 0 for none.

    Example:
    >>> decoder = TextDecoder(vocabulary_size=50, embedding_dim=8, units=16)
    >>> keras.ops.shape(decoder(np.ones((2, 5), "int32"), np.zeros((2, 12))))
    (2, 5, 50)
    """

    def __init__(self, vocabulary_size, embedding_dim=256, units=512, attention_heads=0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.attention_heads = attention_heads
        self.attention = None
        if attention_heads:
            self.attention = keras_hub.layers.CachedMultiHeadAttention(
                attention_heads,
                key_dim=max(units // attention_heads, 1),
                dtype=self.dtype_policy,
                name="attention",
            )
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
            units,
            return_sequences=True,
            recurrent_initializer=FLOAT32_ORTHOGONAL,
            dtype=self.dtype_policy,
            name="gru",
        )
        # In the compute dtype, as keras-hub's language models' logits are;
        # the loss and the samplers read them as float32.
        self.logits = keras.layers.Dense(vocabulary_size, dtype=self.dtype_policy, name="logits")

    def build(self, token_ids_shape, story_state_shape, memory_shape=None, memory_mask_shape=None):
        batch = token_ids_shape[0]
        self.token_embedding.build(token_ids_shape)
        self.initial_state_projection.build(story_state_shape)
        self.condition_projection.build(story_state_shape)
        self.gru.build((batch, None, 2 * self.embedding_dim))
        if self.attention is not None:
            self.attention.build((batch, None, self.units), memory_shape, memory_shape)
        self.logits.build((batch, None, self.units * (2 if self.attention else 1)))

    def initial_cache(self, story_state, memory=None, memory_mask=None):
        """The generation cache: GRU state, condition and, if attending, the
        memory's projected keys and values `(batch, 2, slots, heads, size)`
        with its mask."""
        cache = (
            self.initial_state_projection(story_state),
            self.condition_projection(story_state),
        )
        if self.attention is not None:
            key_value = ops.stack(
                [self.attention._key_dense(memory), self.attention._value_dense(memory)], axis=1
            )
            cache += (key_value, ops.cast(memory_mask, "bool"))
        return cache

    def _read(self, hidden, memory=None, memory_mask=None, key_value=None):
        """Logits from GRU outputs `(batch, length, units)`, attending over
        `memory`, or over its projections `key_value`, if set up."""
        if self.attention is None:
            return self.logits(hidden)
        attention_mask = ops.expand_dims(ops.cast(memory_mask, "bool"), 1)
        if key_value is None:
            attended = self.attention(hidden, memory, attention_mask=attention_mask)
        else:
            attended, _ = self.attention(
                hidden, hidden, attention_mask=attention_mask, cache=key_value
            )
        return self.logits(ops.concatenate([hidden, ops.cast(attended, hidden.dtype)], axis=-1))

    def call(self, token_ids, story_state, memory=None, memory_mask=None):
        state = self.initial_state_projection(story_state)
        condition = self.condition_projection(story_state)
        embedded = self.token_embedding(token_ids)
        condition = ops.broadcast_to(
            ops.expand_dims(condition, 1), ops.shape(embedded)[:-1] + (self.embedding_dim,)
        )
        hidden = self.gru(ops.concatenate([embedded, condition], axis=-1), initial_state=state)
        return self._read(hidden, memory, memory_mask)

    def step(self, token_ids, cache):
        """Advances one token: `(batch,)` ids -> `(batch, vocabulary)` logits, new cache."""
        state, condition = cache[0], cache[1]
        embedded = self.token_embedding(token_ids)
        hidden, _ = self.gru.cell(ops.concatenate([embedded, condition], axis=-1), state)
        # The cache's projected memory and its mask, when attending.
        memory = dict(zip(("key_value", "memory_mask"), cache[2:]))
        logits = self._read(ops.expand_dims(hidden, 1), **memory)[:, 0]
        return logits, (hidden, condition) + tuple(cache[2:])

    def compute_output_shape(self, token_ids_shape, story_state_shape=None, *args):
        return (*token_ids_shape, self.vocabulary_size)

    def compute_output_spec(
        self, token_ids, story_state, memory=None, memory_mask=None, training=None
    ):
        return keras.KerasTensor(
            self.compute_output_shape(token_ids.shape), dtype=self.compute_dtype
        )

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "attention_heads": self.attention_heads,
        }
