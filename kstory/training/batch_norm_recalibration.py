"""Re-estimates a trained encoder's batch-norm statistics before each validation."""

import keras

from kstory.models.builders import batch_norm_layers


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
    saw them in training) with the current weights. No weight changes.

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
    count = 0
    try:
        for batch in batches:
            count += 1
            # moving = moving * m + batch * (1 - m) with m = (k - 1) / k is the
            # running mean of the k batches' statistics.
            for layer in layers:
                layer.momentum = (count - 1) / count
            encoder(preprocess(batch) if preprocess else batch, training=True)
    finally:
        for layer, momentum in zip(layers, momentums):
            layer.momentum = momentum
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
