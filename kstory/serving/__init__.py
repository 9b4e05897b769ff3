"""Serving helpers: raw frames and captions in, text and images out.

`SavedStoryModel` wraps an exported SavedModel; `StoryServingPreprocessor`
prepares raw inputs for any export (SavedModel or ONNX).
"""

from kstory.serving.saved_story_model import SavedStoryModel
from kstory.serving.story_serving_preprocessor import StoryServingPreprocessor

__all__ = ["SavedStoryModel", "StoryServingPreprocessor"]
