"""Scales raw 0-255 frames the way a `keras.applications` model expects."""

import re

import keras
from keras import ops

# How each keras.applications family wants its input (imagenet_utils modes).
# "none": the model rescales inside itself and takes 0-255 floats.
_MODES = (
    (r"ResNet\d+V2", "tf"),
    (r"ResNet\d+", "caffe"),
    (r"VGG\d+", "caffe"),
    (r"MobileNetV3(Small|Large)", "none"),
    (r"MobileNet(V2)?", "tf"),
    (r"InceptionV3|InceptionResNetV2|Xception|NASNet(Mobile|Large)", "tf"),
    (r"DenseNet\d+", "torch"),
    (r"(EfficientNet(V2)?|ConvNeXt|RegNet[XY]|ResNetRS)\w*", "none"),
)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def preprocessing_mode(application):
    """Returns the input mode ("caffe", "tf", "torch", "none") of an application name.

    Example:
    >>> preprocessing_mode("ResNet50")
    'caffe'
    """
    for pattern, mode in _MODES:
        if re.fullmatch(pattern, application):
            return mode
    raise ValueError(
        f"Unknown keras.applications model {application!r}: expected a name such as "
        "ResNet50, MobileNetV2, MobileNetV3Small, EfficientNetB0 or DenseNet121."
    )


@keras.saving.register_keras_serializable(package="kstory")
class ImagePreprocessing(keras.layers.Layer):
    """Turns uint8 or 0-255 float frames into an application's input range.

    Args:
        mode: str. `"caffe"` (BGR, ImageNet mean subtracted: ResNet, VGG),
            `"tf"` (scaled to [-1, 1]), `"torch"` ([0, 1], ImageNet mean/std)
            or `"none"` (0-255 floats, for models that rescale themselves).

    Example:
    >>> layer = ImagePreprocessing(preprocessing_mode("ResNet50"))
    >>> keras.ops.shape(layer(np.zeros((1, 8, 8, 3), "uint8")))
    (1, 8, 8, 3)
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch", "none"):
            raise ValueError(f"mode must be 'caffe', 'tf', 'torch' or 'none'; got {mode!r}.")
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(images, axis=-1) - ops.convert_to_tensor(
                _CAFFE_MEAN_BGR, self.compute_dtype
            )
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, self.compute_dtype)
            return (images / 255.0 - mean) / std
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
