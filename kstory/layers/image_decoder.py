"""Decodes the story state into the next frame with transposed convolutions."""

import math

import keras
from keras import ops

_EPSILON = 1e-3


@keras.saving.register_keras_serializable(package="kstory")
class ImageDecoder(keras.layers.Layer):
    """Dense -> reshape to 4x4 -> Conv2DTranspose x2 upsampling -> sigmoid RGB.

    The hidden layers use GELU: with ReLU, the first upsampling's units of
    the tiny model all died early in training (0.01% non-zero), which cut the
    story state off from the picture (docs/fusion.md).

    With `residual=True` the decoder predicts a change to the last context
    frame: the output is `sigmoid(logit(last_frame) + delta)`. `delta` comes
    from convolutions over the decoded features and the last context frames
    (so motion can be read and extrapolated locally), and starts at zero: an
    untrained model copies the last frame and training only has to learn the
    change. Without it the frame is drawn from the story state alone.

    Args:
        image_size: int. Side of the output image; 4 times a power of two.
        filters: int. Channels at 4x4; halved at each upsampling, down to 16.
        residual: bool. Predict a change to the last context frame, from the
            last context frames passed to `call` as `(batch, frames, H, W, 3)`.
        refinement_filters: int. Channels of the residual path's two
            full-resolution convolutions, the decoder's costliest layers.

    Example:
    >>> keras.ops.shape(ImageDecoder(image_size=32, filters=64)(np.zeros((2, 10))))
    (2, 32, 32, 3)
    >>> frames = np.zeros((2, 2, 64, 64, 3), "uint8")  # the last two frames
    >>> keras.ops.shape(ImageDecoder(32, 64, residual=True)(np.zeros((2, 10)), frames))
    (2, 32, 32, 3)
    """

    def __init__(self, image_size=64, filters=256, residual=False, refinement_filters=32, **kwargs):
        super().__init__(**kwargs)
        num_upsamplings = math.log2(image_size / 4) if image_size >= 4 else -1
        if num_upsamplings < 0 or not num_upsamplings.is_integer():
            raise ValueError(
                f"image_size must be 4 times a power of two (8, 16, 32, 64, 128, 256); "
                f"got {image_size}."
            )
        self.image_size = image_size
        self.filters = filters
        self.refinement_filters = refinement_filters
        self.residual = residual
        self.num_upsamplings = int(num_upsamplings)
        self.seed_projection = keras.layers.Dense(
            4 * 4 * filters, activation="gelu", dtype=self.dtype_policy, name="seed_projection"
        )
        self.seed_reshape = keras.layers.Reshape(
            (4, 4, filters), dtype=self.dtype_policy, name="seed_reshape"
        )
        self.upsamplings = [
            keras.layers.Conv2DTranspose(
                max(filters // 2 ** (i + 1), 16),
                kernel_size=4,
                strides=2,
                padding="same",
                activation="gelu",
                dtype=self.dtype_policy,
                name=f"upsampling_{i}",
            )
            for i in range(self.num_upsamplings)
        ]
        self.refinements = []
        self.modulation = None
        if residual:
            self.refinements = [
                keras.layers.Conv2D(
                    refinement_filters,
                    3,
                    padding="same",
                    activation="gelu",
                    dtype=self.dtype_policy,
                    name=f"refinement_{i}",
                )
                for i in range(2)
            ]
            # FiLM: the story state scales and shifts each refinement's
            # channels. A change that covers the frame (a new scene's
            # background) is one shift per channel, which the upsampling
            # path alone drew too weakly to learn. Zero-initialised:
            # training starts from the unmodulated decoder.
            self.modulation = keras.layers.Dense(
                2 * refinement_filters * len(self.refinements),
                kernel_initializer="zeros",
                dtype=self.dtype_policy,
                name="modulation",
            )
        # Under mixed precision the frame comes out in the compute dtype, as
        # keras-hub backbones' outputs do; `StoryModel` reads it as float32.
        self.to_rgb = keras.layers.Conv2D(
            3,
            kernel_size=3,
            padding="same",
            activation=None if residual else "sigmoid",
            kernel_initializer="zeros" if residual else "glorot_uniform",
            dtype=self.dtype_policy,
            name="to_rgb",
        )

    def build(self, story_state_shape, last_frames_shape=None):
        self.seed_projection.build(story_state_shape)
        if self.modulation is not None:
            self.modulation.build(story_state_shape)
        shape = (story_state_shape[0], 4, 4, self.filters)
        for layer in self.upsamplings:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        if self.residual:
            num_frames = 1 if last_frames_shape is None else last_frames_shape[1]
            shape = (*shape[:3], shape[3] + 3 * num_frames)
            for layer in self.refinements:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.to_rgb.build(shape)

    def call(self, story_state, last_frames=None):
        x = self.seed_reshape(self.seed_projection(story_state))
        for layer in self.upsamplings:
            x = layer(x)
        if not self.residual:
            return self.to_rgb(x)
        if last_frames is None:
            raise ValueError("A residual ImageDecoder needs the last context frame(s).")
        # (batch, frames, H, W, 3) uint8 -> (batch, size, size, 3 * frames) in [0, 1].
        num_frames = last_frames.shape[1]
        frames = ops.concatenate([last_frames[:, i] for i in range(num_frames)], axis=-1)
        frames = self.resize_frames(frames) / 255.0
        x = ops.concatenate([x, ops.cast(frames, x.dtype)], axis=-1)
        # One scale and one shift per refinement, in that order.
        modulation = ops.split(
            self.modulation(story_state)[:, None, None, :], 2 * len(self.refinements), axis=-1
        )
        for layer, scale, shift in zip(self.refinements, modulation[0::2], modulation[1::2]):
            x = layer(x) * (1 + scale) + shift
        # The last frame's logit, and the change to it, in float32.
        last = ops.clip(frames[..., -3:], _EPSILON, 1 - _EPSILON)
        change = ops.cast(self.to_rgb(x), "float32")
        return ops.cast(ops.sigmoid(ops.log(last) - ops.log(1 - last) + change), self.compute_dtype)

    def resize_frames(self, frames):
        """Frames `(batch, H, W, channels)`, 0-255, as the residual path reads them.

        Returns float32 frames at the output size, rounded to 8-bit values:
        what a cache of 8-bit frames at that size holds (see
        `kstory.data.feature_cache`), so that training from the cache matches
        training from full-size frames. Frames already at the output size pass
        through unchanged.
        """
        frames = ops.cast(frames, "float32")
        if frames.shape[1] == self.image_size and frames.shape[2] == self.image_size:
            return frames
        return ops.round(ops.image.resize(frames, (self.image_size, self.image_size)))

    def compute_output_shape(self, story_state_shape, last_frames_shape=None):
        return (story_state_shape[0], self.image_size, self.image_size, 3)

    def compute_output_spec(self, story_state, last_frames=None):
        return keras.KerasTensor(
            self.compute_output_shape(story_state.shape), dtype=self.compute_dtype
        )

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "filters": self.filters,
            "residual": self.residual,
            "refinement_filters": self.refinement_filters,
        }
