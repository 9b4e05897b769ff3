"""Trains a `StoryModel` from cached image features instead of images."""

import keras


class CachedFeatureTrainer(keras.Model):
    """Fits a `StoryModel` on batches from the frozen-feature cache.

    Batches from `make_dataset(..., feature_cache=...)` carry the frozen image
    encoder's `image_features` and the small `last_frames` in place of
    `images`. This model runs the story model's backbone from them
    (`StoryBackbone.compute_outputs`) with the story model's own loss and loss logs,
    skipping the image encoder, the costliest part of a step.

    The weights it trains are the story model's own variables: after `fit`,
    the `StoryModel` is trained and still reads images, for evaluation,
    generation and export. Training from the cache follows the same loss
    curve as training from images, to float tolerance (tested).

    Args:
        story_model: `StoryModel` with a frozen image encoder.

    Example:
    ```python
    cache = build_feature_cache(stories, model.backbone, "runs/x/cache")
    trainer = CachedFeatureTrainer(model)
    trainer.compile(optimizer="adamw")
    trainer.fit(make_dataset(stories, preprocessor, feature_cache=cache))
    ```
    """

    def __init__(self, story_model, **kwargs):
        if story_model.backbone.image_encoder.trainable:
            raise ValueError(
                "Cached image features need a frozen image encoder "
                "(model.freeze_image_encoder=True)."
            )
        super().__init__(**kwargs)
        self.story_model = story_model
        # The loss logs are the story model's metrics; listed here, they are
        # reset and reported by this model's fit.
        self.image_loss_tracker = story_model.image_loss_tracker
        self.text_loss_tracker = story_model.text_loss_tracker
        self.contrastive_loss_tracker = story_model.contrastive_loss_tracker
        if story_model.grounding_loss_tracker is not None:
            self.grounding_loss_tracker = story_model.grounding_loss_tracker
        if story_model.bag_of_words_loss_tracker is not None:
            self.bag_of_words_loss_tracker = story_model.bag_of_words_loss_tracker
        # All its weights are the (built) story model's. Marked built, fit
        # skips a symbolic pass, which on torch can draw dropout randomness
        # and shift the run off the image-fed run's random stream.
        self.built = True

    def call(self, inputs, training=False):
        return self.story_model.backbone.compute_outputs(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.story_model.compute_loss(x, y, y_pred, sample_weight, training)
