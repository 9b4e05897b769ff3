"""Lays the context captions' token states out as one memory for attention."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kstory")
class ContextMemory(keras.layers.Layer):
    """`(batch, steps, length, hidden)` token states -> `(batch, steps * length, units)`.

    Each token state is projected and tagged with a learned embedding of its
    step, so attention can tell the last caption's tokens from the first's.
    The padding mask is flattened alongside. Given `images`, per-step
    vectors `(batch, steps, dim)`, one slot per step's image is appended,
    projected and tagged with the same step embedding, and never masked.

    Args:
        units: int. Size of the memory vectors.
        num_steps: int. Context steps.

    Example:
    >>> memory, mask = ContextMemory(8, 4)(np.zeros((2, 4, 5, 16)), np.ones((2, 4, 5)))
    >>> keras.ops.shape(memory), keras.ops.shape(mask)
    ((2, 20, 8), (2, 20))
    """

    def __init__(self, units, num_steps, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.num_steps = num_steps
        self.projection = keras.layers.Dense(units, dtype=self.dtype_policy, name="projection")
        self.step_embedding = keras.layers.Embedding(
            num_steps, units, dtype=self.dtype_policy, name="step_embedding"
        )

    def build(self, sequence_shape, padding_mask_shape=None, images_shape=None):
        self.projection.build(sequence_shape)
        self.step_embedding.build((self.num_steps,))
        if images_shape is not None:
            self.image_projection = keras.layers.Dense(
                self.units, dtype=self.dtype_policy, name="image_projection"
            )
            self.image_projection.build(images_shape)

    def call(self, sequence, padding_mask, images=None):
        length = sequence.shape[2]
        memory = self.projection(sequence)
        steps = ops.cast(self.step_embedding(ops.arange(self.num_steps)), memory.dtype)
        memory = memory + steps[None, :, None, :]
        memory = ops.reshape(memory, (-1, self.num_steps * length, self.units))
        mask = ops.reshape(ops.cast(padding_mask, "bool"), (-1, self.num_steps * length))
        if images is None:
            return memory, mask
        # One slot per step's image, tagged with the same step embedding.
        image_memory = self.image_projection(images) + steps[None]
        memory = ops.concatenate([memory, image_memory], axis=1)
        mask = ops.concatenate([mask, ops.ones_like(mask[:, : self.num_steps])], axis=1)
        return memory, mask

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None, images_shape=None):
        flat = None if sequence_shape[2] is None else self.num_steps * sequence_shape[2]
        if flat is not None and images_shape is not None:
            flat += self.num_steps
        return (sequence_shape[0], flat, self.units), (sequence_shape[0], flat)

    def compute_output_spec(self, sequence, padding_mask, images=None, training=None):
        memory_shape, mask_shape = self.compute_output_shape(
            sequence.shape, padding_mask.shape, None if images is None else images.shape
        )
        return (
            keras.KerasTensor(memory_shape, dtype=self.compute_dtype),
            keras.KerasTensor(mask_shape, dtype="bool"),
        )

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_steps": self.num_steps}
