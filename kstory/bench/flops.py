"""Model FLOPs of a train step, counted analytically per layer, and MFU.

`train_step_flops` runs one eager forward pass of one sample and, for each
layer call that multiplies (convolutions, dense and einsum-dense layers, the
attention core of `MultiHeadAttention`, GRUs), counts its multiply-adds from
the call's real input and output shapes: 2 FLOPs per multiply-add. Each count
goes to the component of the `StoryBackbone` that made the call (image
encoder, text encoder, fusion and temporal model, image decoder, text
decoder, grounding head). Element-wise work (activations, normalisation,
softmax) and the losses are left out, as in the usual MFU convention; for
these models they are about 1% of the multiply-adds.

A train step is its forward pass and its backward pass. A layer with
trainable weights costs 3x its forward FLOPs (the backward pass computes the
input's and the weights' gradients, each as costly as the forward); a frozen
layer costs 1x. That holds because kstory's frozen layers (the image encoder,
the lower text layers) sit below every trainable one, so no gradient flows
through them. Work the step skips is not counted: with cached image
features or text states, the frozen encoders do not run.

MFU is the achieved FLOP/s over the device's peak. The peak is measured, as a
large matrix product: NumPy's float32 on a CPU (the same figure whatever the
Keras backend), the backend's own in the compute dtype on a GPU.
"""

import collections
import contextlib
import time

import keras
import numpy as np

# The backbone's attributes, by the component their work is counted in.
COMPONENTS = {
    "image_preprocessing": "image encoder",
    "image_encoder": "image encoder",
    "image_projection": "fusion and temporal",
    "image_fusion_projection": "fusion and temporal",
    "text_encoder": "text encoder",
    "text_projection": "fusion and temporal",
    "text_fusion_projection": "fusion and temporal",
    "fusion_dense": "fusion and temporal",
    "fusion_norm": "fusion and temporal",
    "temporal": "fusion and temporal",
    "caption_projection": "image decoder",
    "image_decoder": "image decoder",
    "context_memory": "text decoder",
    "text_decoder": "text decoder",
    "grounding": "grounding head",
}


def _shape(tensor):
    return tuple(int(size) for size in keras.ops.shape(tensor))


def _size(tensor):
    return int(np.prod(_shape(tensor)))


def _einsum_flops(layer, outputs):
    """An `EinsumDense`: 2 x output elements x the contracted kernel size."""
    _, output_spec = layer.equation.split("->")
    kernel_spec = layer.equation.split(",")[1].split("->")[0]
    contracted = np.prod(
        [size for index, size in zip(kernel_spec, layer.kernel.shape) if index not in output_spec]
    )
    return 2 * _size(outputs) * int(contracted)


def _attention_flops(layer, args, kwargs):
    """The attention core: scores (Q K^T) and the weighted sum of values."""
    query = kwargs.get("query", args[0] if args else None)
    value = kwargs.get("value", args[1] if len(args) > 1 else None)
    batch, query_length = _shape(query)[:2]
    value_length = _shape(value)[1]
    head_dims = layer._key_dim + (layer._value_dim or layer._key_dim)
    return 2 * batch * layer._num_heads * query_length * value_length * head_dims


def layer_forward_flops(layer, args, kwargs, outputs):
    """The forward FLOPs of one call of `layer`, or 0 for a layer that does
    no multiply-adds of its own (its sublayers are counted themselves)."""
    layers = keras.layers
    if isinstance(layer, layers.Conv2DTranspose):
        return 2 * _size(args[0]) // layer.kernel.shape[-1] * int(np.prod(layer.kernel.shape))
    if isinstance(layer, layers.DepthwiseConv2D):
        return 2 * _size(outputs) * int(np.prod(layer.kernel.shape[:-2]))
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        return 2 * _size(outputs) // layer.filters * int(np.prod(layer.kernel.shape))
    if isinstance(layer, layers.Dense):
        return 2 * _size(args[0]) // layer.kernel.shape[0] * int(np.prod(layer.kernel.shape))
    if isinstance(layer, layers.EinsumDense):
        return _einsum_flops(layer, outputs)
    if isinstance(layer, layers.MultiHeadAttention):
        return _attention_flops(layer, args, kwargs)
    if isinstance(layer, layers.GRU):
        batch, steps, features = _shape(args[0])
        return 2 * batch * steps * 3 * layer.units * (features + layer.units)
    return 0


def component_labels(backbone):
    """`{id(layer): component}` of a `StoryBackbone`'s top-level layers."""
    return {
        id(getattr(backbone, name)): label
        for name, label in COMPONENTS.items()
        if getattr(backbone, name, None) is not None
    }


@contextlib.contextmanager
def wrapping_layer_calls(wrapper):
    """Routes every Keras layer call through `wrapper(call, layer, *args,
    **kwargs)`, which must return `call(layer, *args, **kwargs)`."""
    original_call = keras.layers.Layer.__call__
    keras.layers.Layer.__call__ = lambda layer, *args, **kwargs: wrapper(
        original_call, layer, *args, **kwargs
    )
    try:
        yield
    finally:
        keras.layers.Layer.__call__ = original_call


@contextlib.contextmanager
def _counting_calls(backbone):
    """Counts every layer call's forward FLOPs, by (component, trainable)."""
    labels = component_labels(backbone)
    counts, components = collections.Counter(), []

    def counting_call(original_call, layer, *args, **kwargs):
        component = labels.get(id(layer)) or (components[-1] if components else "other")
        components.append(component)
        try:
            outputs = original_call(layer, *args, **kwargs)
        finally:
            components.pop()
        flops = layer_forward_flops(layer, args, kwargs, outputs)
        if flops:
            trainable = layer.trainable and (
                bool(layer.trainable_weights) or isinstance(layer, keras.layers.MultiHeadAttention)
            )
            counts[(component, trainable)] += flops
        return outputs

    with wrapping_layer_calls(counting_call):
        yield counts


def train_step_flops(fit_model, backbone, inputs, batch_size):
    """Model FLOPs of one train step of `batch_size` samples, by component.

    Args:
        fit_model: the model `fit` trains (`StoryModel` or
            `CachedFeatureTrainer`), called on `inputs`.
        backbone: its `StoryBackbone`.
        inputs: dict of numpy arrays of one sample (batch axis of 1).
        batch_size: int. Samples per step; the counts are per sample times it.

    Returns:
        dict: `forward` and `step` FLOPs, and `step_by_component`.
    """
    with _counting_calls(backbone) as counts:
        fit_model(inputs, training=False)
    forward, by_component = 0, collections.Counter()
    for (component, trainable), flops in counts.items():
        forward += flops * batch_size
        by_component[component] += flops * batch_size * (3 if trainable else 1)
    return {
        "forward": forward,
        "step": sum(by_component.values()),
        "step_by_component": dict(by_component.most_common()),
    }


def measured_peak_flops(on_gpu, dtype="float32", size=None, repeats=5):
    """The device's peak FLOP/s, measured as the best of `repeats` square
    matrix products: NumPy float32 on a CPU, the backend in `dtype` on a GPU.

    Returns:
        `(flops_per_second, description)`.
    """
    size = size or (8192 if on_gpu else 2048)
    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), np.float32) for _ in range(2))
    if on_gpu:
        a, b = (keras.ops.convert_to_tensor(x, dtype) for x in (a, b))

        def matmul():
            keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])

        source = f"{keras.config.backend()} {dtype} matmul {size}x{size}"
    else:

        def matmul():
            np.matmul(a, b)

        source = f"NumPy float32 matmul {size}x{size}"
    matmul()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best, f"measured: {source}, best of {repeats}"
