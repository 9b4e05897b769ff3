"""Builds a `StoryModel` from configs: encoders from names, presets or files."""

import os

import keras
import keras_hub

from kstory.config_checks import from_preset
from kstory.layers.image_preprocessing import preprocessing_mode
from kstory.models.story_backbone import StoryBackbone
from kstory.models.story_model import StoryModel


def build_image_encoder(name, weights, image_size, batch_norm_momentum=None, options=None):
    """A headless `keras.applications` model with average pooling.

    Args:
        name: str. Application name, e.g. `"ResNet50"`.
        weights: str or None. `"imagenet"`, None / `"none"`, or a local file.
        image_size: int. Side of the input images.
        batch_norm_momentum: float or None. Momentum of the encoder's
            batch-normalisation moving statistics; None keeps the
            application's (0.99 to 0.999). See `set_batch_norm_momentum`.
        options: dict or None. Further keyword arguments of the application
            (`model.image_encoder_options`).
    """
    application = getattr(keras.applications, name, None)
    if application is None or not callable(application):
        raise ValueError(f"model.image_encoder {name!r} is not a keras.applications model.")
    preprocessing_mode(name)  # Fails early on a family kstory cannot feed.
    if weights in (None, "none", "None"):
        weights = None
    elif weights != "imagenet" and not os.path.isfile(weights):
        raise ValueError(
            f"model.image_weights {weights!r} is neither 'imagenet', 'none' nor a file."
        )
    try:
        encoder = application(
            include_top=False,
            weights=weights,
            pooling="avg",
            input_shape=(image_size, image_size, 3),
            **(options or {}),
        )
    except TypeError as error:
        if not options:
            raise
        raise ValueError(
            f"model.image_encoder_options {options!r} are not all arguments of "
            f"keras.applications.{name} ({error})."
        ) from error
    except Exception as error:
        if weights != "imagenet":
            raise
        raise ValueError(
            f"Could not get the ImageNet weights of {name} ({type(error).__name__}: {error}). "
            "Offline, set model.image_weights to a local weights file."
        ) from error
    if batch_norm_momentum is not None:
        set_batch_norm_momentum(encoder, batch_norm_momentum)
    return encoder


def batch_norm_layers(model):
    """Every `BatchNormalization` layer inside `model`, nested ones included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def set_batch_norm_momentum(model, momentum):
    """Sets the moving-statistics momentum of every `BatchNormalization` in `model`.

    Inference uses the moving statistics, which start at mean 0 and variance
    1 and move towards the batch statistics by `1 - momentum` per training
    step. keras.applications models use 0.99 to 0.999, tuned for long
    ImageNet runs: after the ~300 steps of a short from-scratch run, 0.999
    leaves three quarters of the initial values in place, every layer's
    inference-mode output is mis-scaled, the errors compound over the
    network's 30-50 normalisations, and the pooled features come out the same
    for every frame (docs/fusion.md). A frozen pretrained encoder runs its
    normalisations in inference mode and never updates them, so this only
    matters for a trained one.

    Returns:
        int. The number of layers changed.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"Batch-normalisation momentum must be in [0, 1); got {momentum}.")
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def build_text_backbone(model_config, vocabulary_size, sequence_length):
    """The text backbone: a random DistilBERT ("tiny"), or a pretrained one."""
    if model_config.text_encoder == "tiny":
        return keras_hub.models.DistilBertBackbone(
            vocabulary_size=vocabulary_size,
            num_layers=model_config.tiny_text_layers,
            num_heads=model_config.tiny_text_heads,
            hidden_dim=model_config.tiny_text_hidden_dim,
            intermediate_dim=(
                model_config.tiny_text_intermediate_dim or 2 * model_config.tiny_text_hidden_dim
            ),
            max_sequence_length=sequence_length,
            dropout=model_config.tiny_text_dropout,
        )
    backbone = from_preset(
        keras_hub.models.Backbone.from_preset, "model.text_encoder", model_config.text_encoder
    )
    if backbone.vocabulary_size != vocabulary_size:
        raise ValueError(
            f"model.text_encoder {model_config.text_encoder!r} has a vocabulary of "
            f"{backbone.vocabulary_size} tokens but the tokenizer (data.tokenizer) has "
            f"{vocabulary_size}; load both from the same preset or folder."
        )
    return backbone


def build_story_model(
    model_config,
    data_config,
    preprocessor,
    image_encoder=None,
    image_preprocessing=None,
    vocabulary_size=None,
):
    """Builds (not compiles) a `StoryModel` for a data config and preprocessor.

    Args:
        model_config: `ModelConfig`.
        data_config: `DataConfig`. Gives image sizes and caption lengths.
        preprocessor: `StoryTextPreprocessor`. Gives the vocabulary. None
            builds a model that trains but cannot generate (benchmarks); then
            pass `vocabulary_size`, and padding is id 0.
        image_encoder: optional `keras.Model` mapping `(image_size, image_size,
            3)` images to a feature vector, used instead of
            `model_config.image_encoder` (e.g. a small CNN in tests).
        image_preprocessing: str. Input mode of a given `image_encoder`;
            None for `StoryBackbone`'s default.
        vocabulary_size: int. Only without a preprocessor.
    """
    if preprocessor is not None:
        vocabulary_size = int(preprocessor.tokenizer.vocabulary_size())
    elif vocabulary_size is None:
        raise ValueError("build_story_model needs a preprocessor or a vocabulary_size.")
    # keras.applications models take their dtype from the global policy, so it
    # is set while building and restored after.
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(model_config.dtype_policy)
    try:
        if image_encoder is None:
            image_encoder = build_image_encoder(
                model_config.image_encoder,
                model_config.image_weights,
                data_config.image_size,
                options=model_config.image_encoder_options,
                batch_norm_momentum=(
                    None
                    if model_config.freeze_image_encoder
                    else model_config.image_batch_norm_momentum
                ),
            )
            image_preprocessing = preprocessing_mode(model_config.image_encoder)
        pad_token_id = 0 if preprocessor is None else preprocessor.tokenizer.pad_token_id
        backbone = _build_backbone(
            model_config,
            data_config,
            vocabulary_size,
            image_encoder,
            image_preprocessing,
            pad_token_id,
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return StoryModel(
        backbone,
        preprocessor,
        pad_token_id=None if preprocessor is not None else 0,
        **model_config.loss_settings(),
    )


def _build_backbone(
    model_config,
    data_config,
    vocabulary_size,
    image_encoder,
    image_preprocessing,
    pad_token_id=0,
):
    text_backbone = build_text_backbone(model_config, vocabulary_size, data_config.sequence_length)
    preprocessing = {}  # None keeps StoryBackbone's default mode.
    if image_preprocessing is not None:
        preprocessing["image_preprocessing"] = image_preprocessing
    return StoryBackbone(
        image_encoder,
        text_backbone,
        vocabulary_size,
        image_size=data_config.image_size,
        target_image_size=data_config.target_image_size,
        num_context_steps=data_config.num_context_steps,
        sequence_length=data_config.sequence_length,
        pad_token_id=pad_token_id,
        image_resize=data_config.image_resize,
        entity_slots=data_config.entity_slots,
        dtype=model_config.dtype_policy,
        **preprocessing,
        **model_config.backbone_settings(),
    )
