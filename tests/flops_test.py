import keras
import numpy as np
import pytest

from kstory.bench.flops import layer_forward_flops
from kstory.bench.flops import measured_peak_flops
from kstory.bench.flops import train_step_flops
from kstory.bench.train_step_bench import BENCH_SHAPES
from kstory.bench.train_step_bench import synthetic_batches
from kstory.models.builders import build_story_model

# Each kind of layer the count knows, with the input it is called on. No
# bias, activation or padding: XLA's cost analysis then counts exactly the
# multiply-adds (it leaves out padded positions, which the analytic count,
# as fvcore's and ptflops', includes).
LAYERS = {
    "dense": (lambda: keras.layers.Dense(7, use_bias=False), (2, 5, 3)),
    "conv2d": (lambda: keras.layers.Conv2D(6, 3, strides=2, use_bias=False), (2, 9, 9, 4)),
    "grouped_conv2d": (lambda: keras.layers.Conv2D(6, 1, groups=2, use_bias=False), (1, 4, 4, 4)),
    "depthwise": (lambda: keras.layers.DepthwiseConv2D(3, use_bias=False), (2, 8, 8, 5)),
    "transpose": (
        lambda: keras.layers.Conv2DTranspose(3, 4, strides=2, use_bias=False),
        (2, 5, 5, 6),
    ),
    "einsum": (
        lambda: keras.layers.EinsumDense("abc,cde->abde", (5, 2, 3), bias_axes=None),
        (2, 5, 8),
    ),
}


def _analytic(layer, shape):
    inputs = np.random.default_rng(0).random(shape, np.float32)
    return layer_forward_flops(layer, (inputs,), {}, layer(inputs))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_count_matches_xla_cost_analysis(name):
    if keras.config.backend() != "jax":
        pytest.skip("XLA's cost analysis is the JAX backend's; the JAX pass runs this.")
    import jax

    make_layer, shape = LAYERS[name]
    layer = make_layer()
    analytic = _analytic(layer, shape)
    weights = [weight.value for weight in layer.weights]

    def forward(weights, inputs):
        return layer.stateless_call(weights, [], inputs)[0]

    inputs = np.zeros(shape, np.float32)
    cost = jax.jit(forward).lower(weights, inputs).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert analytic == cost["flops"] > 0


def test_dense_gru_and_attention_counts():
    # By hand: 2 FLOPs per multiply-add.
    assert _analytic(keras.layers.Dense(4), (2, 5, 3)) == 2 * 10 * 3 * 4
    assert _analytic(keras.layers.GRU(4, return_sequences=True), (2, 5, 3)) == (
        2 * 2 * 5 * 3 * 4 * (3 + 4)
    )
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    query, value = np.ones((2, 4, 6), "float32"), np.ones((2, 7, 6), "float32")
    core = layer_forward_flops(attention, (query, value), {}, attention(query, value))
    assert core == 2 * 2 * 2 * 4 * 7 * (3 + 3)  # Q K^T and the weighted sum.


def _tiny_counts(**overrides):
    shape = BENCH_SHAPES["tiny"]
    model = build_story_model(shape.model, shape.data, None, vocabulary_size=shape.vocabulary_size)
    for name, trainable in overrides.items():
        getattr(model.backbone, name).trainable = trainable
    inputs, _ = synthetic_batches(shape, 1)
    return model, train_step_flops(model, model.backbone, inputs, batch_size=16)


def test_the_step_is_three_forwards_for_trained_layers_and_one_for_frozen():
    model, counts = _tiny_counts()
    by_component = counts["step_by_component"]
    assert set(by_component) == {
        "image encoder",
        "text encoder",
        "fusion and temporal",
        "image decoder",
        "text decoder",
    }
    assert sum(by_component.values()) == counts["step"]
    model.backbone.trainable = False
    frozen = train_step_flops(
        model, model.backbone, synthetic_batches(BENCH_SHAPES["tiny"], 1)[0], batch_size=16
    )
    assert frozen["forward"] == counts["forward"] == frozen["step"]
    model.backbone.trainable = True
    model.backbone.text_encoder.num_frozen_layers = -1
    model.backbone.image_encoder.trainable = True
    all_trained = train_step_flops(
        model, model.backbone, synthetic_batches(BENCH_SHAPES["tiny"], 1)[0], batch_size=16
    )
    assert all_trained["step"] == 3 * counts["forward"] > counts["step"]


def test_the_tiny_model_count_is_close_to_xla():
    """The whole forward pass: XLA also counts element-wise work and leaves
    out padded positions; the analytic count is within 10% of it."""
    if keras.config.backend() != "jax":
        pytest.skip("XLA's cost analysis is the JAX backend's; the JAX pass runs this.")
    import jax

    model, counts = _tiny_counts()
    inputs, _ = synthetic_batches(BENCH_SHAPES["tiny"], 16)
    trainable = [variable.value for variable in model.trainable_variables]
    frozen = [variable.value for variable in model.non_trainable_variables]

    def forward(trainable, frozen, inputs):
        return model.stateless_call(trainable, frozen, inputs, training=False)[0]

    cost = jax.jit(forward).lower(trainable, frozen, inputs).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert counts["forward"] == pytest.approx(cost["flops"], rel=0.1)


def test_the_peak_is_a_matrix_product_rate():
    peak, source = measured_peak_flops(on_gpu=False, size=256, repeats=2)
    assert 1e8 < peak < 1e14 and source.startswith("measured: NumPy float32 matmul 256x256")
