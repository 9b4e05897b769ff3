"""One function compiled by the backend's tracer: the helper that branches on the backend."""

import keras


def compiled_function(function):
    """`function` traced into a graph by the current backend, for repeated calls.

    `tf.function` under TensorFlow and `jax.jit` under JAX, where a function
    of many small ops runs several times faster traced than op by op; the
    function itself under PyTorch, whose eager ops are fast. `function` must
    be stateless (no variable assignment), as `jax.jit` requires: pass
    variable values in and return the new ones, e.g. through
    `Layer.stateless_call`.

    Example:
    >>> import numpy as np
    >>> square = compiled_function(lambda x: keras.ops.square(x))
    >>> keras.ops.convert_to_numpy(square(np.array([1.0, 2.0], "float32"))).tolist()
    [1.0, 4.0]
    """
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(function)
    return function
