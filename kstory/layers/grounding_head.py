"""Predicts which of a story's entities appear in the next frame."""

import keras
from keras import ops

from kstory.data.entities import ENTITY_KINDS
from kstory.data.entities import num_entity_slots

# The logit of a slot the context never showed: it cannot be named.
MASKED_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="kstory")
class GroundingHead(keras.layers.Layer):
    """Entity presence in the next frame, from each context step's state and
    the context's entities.

    Entity ids are local to a story, so the head reads and predicts slots
    (`kstory.data.entities`): `slots` per kind. Every slot is scored by one
    MLP shared by all slots, from what the story says of that entity:
    - its presence in each context step (`char2` came, went, came back...);
    - the mean state of the steps that show it: what was said and seen while
      it was there (a background's name, a character's doings);
    - the story state (the last step's), and the last caption's embedding,
      which say what comes next ("Next comes the beach");
    - its kind.
    Sharing the MLP makes what is learnt of one slot hold for every slot, as
    the slot numbers mean nothing across stories. The MLP's logit is added
    to a learnt multiple (`copy_scale`, initially 2) of +1 for a slot the
    last step shows and -1 otherwise: the head starts from "the same
    entities as the last frame", the floor, and learns what changes. The story state also gives
    one logit per kind: does an entity the context never showed come in?
    A slot that no context step shows gets `MASKED_LOGIT`: no id can name an
    entity the story has not introduced; the per-kind "new" logits are for
    those.

    Args:
        slots: int. Slots per entity kind.
        hidden_dim: int. Width of the MLP's hidden layer.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Call args:
        step_states: `(batch, steps, units)`, the state after each step.
        context_entities: `(batch, steps, num_slots)` presence, 0 or 1.
        last_caption: `(batch, dim)`, the last context caption's embedding.

    Returns:
        float32 logits `(batch, num_slots + len(ENTITY_KINDS))`.

    Example:
    >>> head = GroundingHead(slots=2, hidden_dim=8)
    >>> entities = np.zeros((1, 4, 6), "int32"); entities[0, :, 2] = 1  # obj1
    >>> logits = keras.ops.convert_to_numpy(head(np.ones((1, 4, 16)), entities, np.ones((1, 8))))
    >>> logits.shape, bool((logits[0, [0, 1, 3, 4, 5]] == -1e9).all())
    ((1, 9), True)
    """

    def __init__(self, slots, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.slots = slots
        self.hidden_dim = hidden_dim
        self.num_slots = num_entity_slots(slots)
        self.hidden = keras.layers.Dense(
            hidden_dim, activation="gelu", dtype=self.dtype_policy, name="slot_hidden"
        )
        self.slot_logit = keras.layers.Dense(1, dtype=self.dtype_policy, name="slot_logit")
        self.new_hidden = keras.layers.Dense(
            hidden_dim, activation="gelu", dtype=self.dtype_policy, name="new_entity_hidden"
        )
        self.new_logits = keras.layers.Dense(
            len(ENTITY_KINDS), dtype=self.dtype_policy, name="new_entity_logits"
        )

    def build(self, step_states_shape, context_entities_shape, last_caption_shape):
        units, steps = step_states_shape[-1], context_entities_shape[1]
        context_dim = units + last_caption_shape[-1]
        self.hidden.build((None, None, context_dim + units + steps + len(ENTITY_KINDS)))
        self.slot_logit.build((None, None, self.hidden_dim))
        self.new_hidden.build((None, context_dim))
        self.new_logits.build((None, self.hidden_dim))
        self.copy_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(2.0),
            dtype="float32",
            name="copy_scale",
        )

    def slot_features(self, step_states, context_entities, last_caption):
        """Each slot's MLP input: the mean state of the steps that show it,
        the story state and the last caption, its presence per step and its
        kind (one-hot)."""
        presence = ops.cast(context_entities, step_states.dtype)
        counts = ops.maximum(ops.sum(presence, axis=1), 1)[..., None]
        content = ops.einsum("bts,btu->bsu", presence, step_states) / counts
        story = ops.concatenate(
            [step_states[:, -1, :], ops.cast(last_caption, step_states.dtype)], axis=-1
        )
        story = ops.repeat(story[:, None, :], self.num_slots, axis=1)
        history = ops.transpose(presence, (0, 2, 1))
        kinds = ops.repeat(ops.eye(len(ENTITY_KINDS), dtype=step_states.dtype), self.slots, axis=0)
        kinds = ops.broadcast_to(kinds[None], (ops.shape(presence)[0], *kinds.shape))
        return ops.concatenate([content, story, history, kinds], axis=-1)

    def call(self, step_states, context_entities, last_caption):
        features = self.slot_features(step_states, context_entities, last_caption)
        slot_logits = ops.cast(self.slot_logit(self.hidden(features))[..., 0], "float32")
        last = ops.cast(context_entities[:, -1, :], "float32")
        slot_logits = slot_logits + self.copy_scale * (2 * last - 1)
        story = ops.concatenate(
            [step_states[:, -1, :], ops.cast(last_caption, step_states.dtype)], axis=-1
        )
        new_logits = self.new_logits(self.new_hidden(story))
        logits = ops.concatenate([slot_logits, ops.cast(new_logits, "float32")], axis=-1)
        seen = ops.max(ops.cast(context_entities, "float32"), axis=1) > 0
        nameable = ops.concatenate(
            [seen, ops.ones_like(logits[:, self.num_slots :], dtype="bool")], axis=-1
        )
        return ops.where(nameable, logits, MASKED_LOGIT)

    def compute_output_spec(self, step_states, context_entities, last_caption):
        return keras.KerasTensor(
            (step_states.shape[0], self.num_slots + len(ENTITY_KINDS)), dtype="float32"
        )

    def get_config(self):
        config = super().get_config()
        config.update({"slots": self.slots, "hidden_dim": self.hidden_dim})
        return config
