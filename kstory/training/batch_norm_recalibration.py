"""Re-estimates a trained encoder's batch-norm statistics before each validation."""

import weakref

import keras
import numpy as np

from kstory.compiled_function import compiled_function
from kstory.models.builders import batch_norm_layers

# Per encoder: the compiled batch-statistics function and what it was traced for.
_COMPILED_STATISTICS = weakref.WeakKeyDictionary()


def _batch_statistics_function(encoder, layers, preprocess):
    """A compiled `(trainable, non_trainable, batch) -> [mean, variance, ...]`:
    each of `layers`' batch statistics on `batch`, in training mode.

    It runs `encoder` statelessly with the layers' momentum at 0, so that the
    moving statistics it returns are the batch's own. Traced once per encoder
    and reused: an op-by-op pass of a keras.applications encoder costs about
    five times as much (docs/performance.md)."""
    variables = encoder.non_trainable_variables
    position = {id(variable): index for index, variable in enumerate(variables)}
    wanted = [
        position[id(variable)]
        for layer in layers
        for variable in (layer.moving_mean, layer.moving_variance)
    ]
    # The traced function depends only on which statistics it returns and on
    # `preprocess`; other changes of the variable lists retrace by themselves.
    key = (tuple(wanted), id(preprocess))
    cached = _COMPILED_STATISTICS.get(encoder)
    if cached is not None and cached[0] == key:
        return cached[1]

    def statistics(trainable, non_trainable, batch):
        inputs = preprocess(batch) if preprocess else batch
        _, updated = encoder.stateless_call(trainable, non_trainable, inputs, training=True)
        return [updated[index] for index in wanted]

    function = compiled_function(statistics)
    _COMPILED_STATISTICS[encoder] = (key, function)
    return function


def recalibrate_batch_norm(encoder, batches, preprocess=None):
    """Sets every `BatchNormalization` statistic of `encoder` to its mean over `batches`.

    "Precise BN" (Wu & Johnson, 2021): inference-mode normalisation uses
    moving statistics, an exponential average that lags behind the weights
    and starts at mean 0, variance 1. After a short run from scratch they are
    still near those values, every layer's inference-mode output is
    mis-scaled, the errors compound over the network, and a
    keras.applications encoder gives the same features for every frame
    (docs/fusion.md). Here each statistic becomes the plain average of its
    batch statistics over `batches`, computed in training mode (as the layer
    saw them in training) with the current weights, in one compiled pass per
    batch. No weight changes.

    Args:
        encoder: a `keras.Model` or layer holding `BatchNormalization` layers.
        batches: iterable of input batches for `encoder`.
        preprocess: optional callable applied to each batch first.

    Returns:
        int. The number of batches used.

    References:
        - [Wu & Johnson, 2021](https://arxiv.org/abs/2105.07576)
    """
    layers = [layer for layer in batch_norm_layers(encoder) if layer.trainable]
    if not layers:
        return 0
    momentums = [layer.momentum for layer in layers]
    totals, count = None, 0
    try:
        # At momentum 0 a training-mode pass sets each moving statistic to
        # the batch's own: the stateless pass returns them, summed here.
        for layer in layers:
            layer.momentum = 0.0
        statistics = _batch_statistics_function(encoder, layers, preprocess)
        trainable = [variable.value for variable in encoder.trainable_variables]
        non_trainable = [variable.value for variable in encoder.non_trainable_variables]
        for batch in batches:
            values = [
                keras.ops.convert_to_numpy(value).astype(np.float64)
                for value in statistics(trainable, non_trainable, batch)
            ]
            totals = values if totals is None else [t + v for t, v in zip(totals, values)]
            count += 1
    finally:
        for layer, momentum in zip(layers, momentums):
            layer.momentum = momentum
    if count:
        for layer, mean, variance in zip(layers, totals[0::2], totals[1::2]):
            layer.moving_mean.assign((mean / count).astype(layer.moving_mean.dtype))
            layer.moving_variance.assign((variance / count).astype(layer.moving_variance.dtype))
    return count


class BatchNormRecalibration(keras.callbacks.Callback):
    """Recalibrates a trained image encoder's batch-norm statistics before validation.

    Runs `recalibrate_batch_norm` on `on_test_begin`, so validation, the best
    checkpoint and the saved model all use statistics of the current weights.
    The batches are the same every time (fixed frames, fixed order), so a
    resumed run recalibrates to the same values as an uninterrupted one.
    Training itself normalises with batch statistics and is unchanged.

    Args:
        backbone: `StoryBackbone` whose `image_encoder` is trained.
        frames: a finite iterable of uint8 frame batches `(batch, H, W, 3)`.

    Example:
    ```python
    callback = BatchNormRecalibration(model.backbone, frame_batches)
    model.fit(dataset, validation_data=val, callbacks=[callback])
    ```
    """

    def __init__(self, backbone, frames):
        super().__init__()
        self.backbone = backbone
        self.frames = frames

    def on_test_begin(self, logs=None):
        recalibrate_batch_norm(
            self.backbone.image_encoder, self.frames, self.backbone.image_preprocessing
        )
