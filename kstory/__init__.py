"""kstory: visual story continuation with Keras 3.

Importing kstory registers its Keras classes, so a saved `.keras` model loads
with `keras.saving.load_model(path)` and no `custom_objects`.
"""

from kstory.quiet_start import quiet_tensorflow_start

# Keras, and with it TensorFlow, load here.
with quiet_tensorflow_start():
    from kstory.data.story_text_preprocessor import StoryTextPreprocessor
    from kstory.layers.context_memory import ContextMemory
    from kstory.layers.image_decoder import ImageDecoder
    from kstory.layers.image_preprocessing import ImagePreprocessing
    from kstory.layers.step_text_encoder import StepTextEncoder
    from kstory.layers.temporal_transformer import TemporalTransformer
    from kstory.layers.text_decoder import TextDecoder
    from kstory.losses.info_nce_loss import InfoNCELoss
    from kstory.models.story_backbone import StoryBackbone
    from kstory.models.story_model import StoryModel
    from kstory.version import __version__

__all__ = [
    "ContextMemory",
    "ImageDecoder",
    "ImagePreprocessing",
    "InfoNCELoss",
    "StepTextEncoder",
    "StoryBackbone",
    "StoryModel",
    "StoryTextPreprocessor",
    "TemporalTransformer",
    "TextDecoder",
    "__version__",
]
