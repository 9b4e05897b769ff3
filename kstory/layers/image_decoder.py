"""Decodes the story state into the next frame with transposed convolutions."""

import math

import keras


@keras.saving.register_keras_serializable(package="kstory")
class ImageDecoder(keras.layers.Layer):
    """Dense -> reshape to 4x4 -> Conv2DTranspose x2 upsampling -> sigmoid RGB.

    Args:
        image_size: int. Side of the output image; 4 times a power of two.
        filters: int. Channels at 4x4; halved at each upsampling, down to 16.

    Example:
    >>> ImageDecoder(image_size=32, filters=64)(np.zeros((2, 10))).shape
    (2, 32, 32, 3)
    """

    def __init__(self, image_size=64, filters=256, **kwargs):
        super().__init__(**kwargs)
        num_upsamplings = math.log2(image_size / 4) if image_size >= 4 else -1
        if num_upsamplings < 0 or not num_upsamplings.is_integer():
            raise ValueError(
                f"image_size must be 4 times a power of two (8, 16, 32, 64, 128, 256); "
                f"got {image_size}."
            )
        self.image_size = image_size
        self.filters = filters
        self.num_upsamplings = int(num_upsamplings)
        self.seed_projection = keras.layers.Dense(
            4 * 4 * filters, activation="relu", dtype=self.dtype_policy, name="seed_projection"
        )
        self.seed_reshape = keras.layers.Reshape((4, 4, filters), dtype=self.dtype_policy)
        self.upsamplings = [
            keras.layers.Conv2DTranspose(
                max(filters // 2 ** (i + 1), 16),
                kernel_size=4,
                strides=2,
                padding="same",
                activation="relu",
                dtype=self.dtype_policy,
                name=f"upsampling_{i}",
            )
            for i in range(self.num_upsamplings)
        ]
        # The output head stays float32 under mixed precision.
        self.to_rgb = keras.layers.Conv2D(
            3, kernel_size=3, padding="same", activation="sigmoid", dtype="float32", name="to_rgb"
        )

    def build(self, input_shape):
        self.seed_projection.build(input_shape)
        shape = (input_shape[0], 4, 4, self.filters)
        for layer in self.upsamplings:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.to_rgb.build(shape)

    def call(self, story_state):
        x = self.seed_reshape(self.seed_projection(story_state))
        for layer in self.upsamplings:
            x = layer(x)
        return self.to_rgb(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "filters": self.filters}
