"""An orthogonal initializer that also initialises bfloat16 variables."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kstory")
class Float32Orthogonal(keras.initializers.Orthogonal):
    """`keras.initializers.Orthogonal`, computed in float32 and cast.

    The GRUs' default recurrent initializer runs a QR decomposition in the
    variables' dtype, and TensorFlow's QR has no bfloat16 kernel: a GRU under
    a `bfloat16` policy could not be built. Float32 variables get the same
    values as from `"orthogonal"`.
    """

    def __call__(self, shape, dtype=None):
        return ops.cast(super().__call__(shape, dtype="float32"), dtype)


# Pass this name, not an instance: the layer then resolves it when it builds
# its other initializers, and draws their seeds in the same order as with
# "orthogonal" (a seeded run initialises exactly as before).
FLOAT32_ORTHOGONAL = "kstory>Float32Orthogonal"
