"""`kstory bench`: train-step speed, compile time and memory on synthetic inputs."""

import contextlib
import dataclasses
import functools
import platform
import resource
import time

import keras
import numpy as np

from kstory import distribution
from kstory.bench.flops import measured_peak_flops
from kstory.bench.flops import train_step_flops
from kstory.data.data_config import DataConfig
from kstory.models.builders import build_story_model
from kstory.models.model_config import ModelConfig
from kstory.training.cached_feature_trainer import CachedFeatureTrainer


@dataclasses.dataclass(frozen=True)
class BenchShape:
    """A workload: the data and model settings, and the vocabulary size.

    Args:
        data: `DataConfig`. Batch size, image sizes and caption lengths.
        model: `ModelConfig`. Encoders (random weights), decoders, precision.
        vocabulary_size: int. Tokenizer size.
    """

    data: DataConfig
    model: ModelConfig
    vocabulary_size: int


def _small_shape(image_size, image_encoder, freeze_image_encoder):
    """A small random model at `image_size`: tiny text and decoders."""
    return BenchShape(
        data=DataConfig(
            image_size=image_size,
            target_image_size=image_size,
            sequence_length=32,
            decoder_sequence_length=32,
            batch_size=16,
        ),
        model=ModelConfig(
            image_encoder=image_encoder,
            image_weights="none",
            freeze_image_encoder=freeze_image_encoder,
            text_encoder="tiny",
            tiny_text_layers=2,
            tiny_text_hidden_dim=64,
            tiny_text_heads=2,
            num_frozen_text_layers=1,
            embedding_dim=128,
            fusion_dim=128,
            temporal_units=128,
            decoder_filters=64,
            text_decoder_embedding_dim=64,
            text_decoder_units=128,
        ),
        vocabulary_size=1000,
    )


# `paper` is configs/paper.py's architecture with random weights: ResNet50 at
# 224 px (frozen), a DistilBERT-base-sized encoder (6 layers, 768 wide, 3072
# feed-forward, lower 4 frozen), GRU 512, 64-px output, bf16; batch 32 and 32
# tokens, as in the yardsticks (../shared/bench). `tiny` is the CPU model of
# configs/tiny.py. `cpu` keeps the paper's frozen ResNet50, at 64 px, with
# tiny text and decoders: the frozen-encoder workload at a size 2 CPU cores
# can run (the epoch benchmark's default).
BENCH_SHAPES = {
    "paper": BenchShape(
        data=DataConfig(
            image_size=224,
            target_image_size=64,
            sequence_length=32,
            decoder_sequence_length=32,
            batch_size=32,
        ),
        model=ModelConfig(
            image_encoder="ResNet50",
            image_weights="none",
            text_encoder="tiny",
            tiny_text_layers=6,
            tiny_text_hidden_dim=768,
            tiny_text_heads=12,
            tiny_text_intermediate_dim=3072,
            num_frozen_text_layers=4,
            embedding_dim=256,
            fusion_dim=256,
            temporal_units=512,
            decoder_filters=256,
            text_decoder_embedding_dim=256,
            text_decoder_units=512,
            dtype_policy="mixed_bfloat16",
        ),
        vocabulary_size=30522,
    ),
    "cpu": _small_shape(64, "ResNet50", freeze_image_encoder=True),
    "tiny": _small_shape(32, "MobileNetV3Small", freeze_image_encoder=False),
}


def synthetic_batches(shape, num_samples, seed=0):
    """Random `(inputs, targets)` numpy arrays of a shape's sizes."""
    data = shape.data
    steps, rng = data.num_context_steps, np.random.default_rng(seed)
    vocabulary = shape.vocabulary_size
    inputs = {
        "images": rng.integers(
            0, 256, (num_samples, steps, data.image_size, data.image_size, 3), dtype=np.uint8
        ),
        "token_ids": rng.integers(
            1, vocabulary, (num_samples, steps, data.sequence_length), dtype=np.int32
        ),
        "padding_mask": np.ones((num_samples, steps, data.sequence_length), np.int32),
        "decoder_token_ids": rng.integers(
            1, vocabulary, (num_samples, data.decoder_sequence_length), dtype=np.int32
        ),
    }
    targets = {
        "next_image": rng.random(
            (num_samples, data.target_image_size, data.target_image_size, 3), dtype=np.float32
        ),
        "next_token_ids": rng.integers(
            1, vocabulary, (num_samples, data.decoder_sequence_length), dtype=np.int32
        ),
    }
    return inputs, targets


def _as_cached_features(inputs, model, seed):
    """Replaces synthetic `images` by what the feature cache would hold, and
    adds the text cache's states when text layers are frozen."""
    backbone, rng = model.backbone, np.random.default_rng(seed)
    images = inputs.pop("images")
    size = backbone.target_image_size
    feature_dim = backbone.image_encoder.output_shape[-1]
    inputs["image_features"] = rng.random((*images.shape[:2], feature_dim), dtype=np.float32)
    inputs["last_frames"] = rng.integers(0, 256, (len(images), 2, size, size, 3), dtype=np.uint8)
    if backbone.text_encoder.caches:
        states_shape = (*inputs["token_ids"].shape, backbone.text_encoder.backbone.hidden_dim)
        inputs["text_states"] = rng.standard_normal(states_shape, dtype=np.float32)
        inputs["caption_states"] = inputs["text_states"][:, -1]
    return inputs


def _input_kind(from_features, model):
    if not from_features:
        return "images"
    if model.backbone.text_encoder.caches:
        return "cached image features and text states"
    return "cached image features"


def device():
    """`(platform, device name)` of the backend's first device: `("gpu", …)` or `("cpu", …)`."""
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return device.platform, getattr(device, "device_kind", str(device))
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", torch.cuda.get_device_name(0)
        return "cpu", platform.processor() or platform.machine()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ("gpu", gpus[0].name) if gpus else ("cpu", platform.processor() or platform.machine())


def _peak_device_memory_mib():
    backend = keras.config.backend()
    try:
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
            return None if peak is None else round(peak / 2**20, 1)
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except (RuntimeError, AttributeError):
        return None
    return None


def utilisation(flops, step_s, on_gpu, dtype_policy):
    """FLOPs per step, achieved FLOP/s and MFU, JSON-ready (see `kstory.bench.flops`)."""
    compute_dtype = keras.mixed_precision.DTypePolicy(dtype_policy).compute_dtype
    peak, peak_source = measured_peak_flops(on_gpu, compute_dtype)
    achieved = flops["step"] / step_s
    return {
        "gflops_per_step": round(flops["step"] / 1e9, 2),
        "achieved_tflops": float(f"{achieved / 1e12:.3g}"),
        "peak_tflops": float(f"{peak / 1e12:.3g}"),
        "mfu": float(f"{achieved / peak:.3g}"),
        "peak_source": peak_source,
        "flops_method": "analytic, per layer (kstory.bench.flops)",
        "gflops_by_component": {
            name: round(value / 1e9, 3) for name, value in flops["step_by_component"].items()
        },
    }


def _bench_shape(shape_name, batch_size, dtype_policy, from_features):
    """The named shape with the benchmark's overrides."""
    if shape_name not in BENCH_SHAPES:
        raise ValueError(f"--shape must be one of {sorted(BENCH_SHAPES)}; got {shape_name!r}.")
    shape = BENCH_SHAPES[shape_name]
    data, model = shape.data, shape.model
    if batch_size:
        data = dataclasses.replace(data, batch_size=batch_size)
    if dtype_policy:
        model = dataclasses.replace(model, dtype_policy=dtype_policy)
    if from_features:
        model = dataclasses.replace(model, freeze_image_encoder=True)
    return dataclasses.replace(shape, data=data, model=model)


def run_train_step_bench(
    shape_name,
    steps=20,
    warmup_steps=3,
    batch_size=None,
    dtype_policy=None,
    jit_compile="auto",
    from_features=False,
    data_parallel=False,
    seed=0,
):
    """Times kstory's train step on synthetic inputs of a named shape.

    The first `warmup_steps` steps (which trace and compile) are timed as
    `compile_s`; the next `steps` give `step_ms` and `samples_per_s`.
    Inputs are numpy arrays, so no TensorFlow is needed.

    Args:
        shape_name: str. A key of `BENCH_SHAPES`.
        steps: int. Timed steps.
        warmup_steps: int. Untimed steps first (compilation).
        batch_size: int. Overrides the shape's batch size.
        dtype_policy: str. Overrides the shape's precision.
        jit_compile: `"auto"`, True or False, as for `Model.compile`.
        from_features: bool. Time the step from the caches
            (`CachedFeatureTrainer` on synthetic image features and small
            frames, and frozen text layers' states when the shape freezes
            any) instead of from images; the image encoder is frozen.
        data_parallel: bool. Split the batch over all devices with the
            backend's data-parallel engine (`kstory.distribution`).
        seed: int. Seed of the weights and the inputs.

    Returns:
        dict of the settings and measurements, JSON-ready.
    """
    shape = _bench_shape(shape_name, batch_size, dtype_policy, from_features)
    replicas, scope = 1, contextlib.nullcontext
    if data_parallel:
        setup = distribution.data_parallel()
        replicas, scope = setup.num_replicas, setup.scope
    keras.utils.set_random_seed(seed)
    build_start = time.perf_counter()
    with scope():
        model = build_story_model(
            shape.model, shape.data, None, vocabulary_size=shape.vocabulary_size
        )
        fit_model = CachedFeatureTrainer(model) if from_features else model
        fit_model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=jit_compile)
    build_s, batch = time.perf_counter() - build_start, shape.data.batch_size
    inputs, targets = synthetic_batches(shape, batch * (warmup_steps + steps), seed)
    if from_features:
        inputs = _as_cached_features(inputs, model, seed)
    # `keras.Model.fit`, not keras-hub's `Task.fit`: the arrays need no
    # preprocessing, and the Task would route them through tf.data or grain.
    fit = functools.partial(
        keras.Model.fit,
        fit_model,
        inputs,
        targets,
        batch_size=batch,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    start = time.perf_counter()
    fit(steps_per_epoch=warmup_steps)
    warm = time.perf_counter()
    fit(steps_per_epoch=steps)
    end = time.perf_counter()
    platform_name, device_name = device()
    step_s = (end - warm) / steps
    sample = {key: value[:1] for key, value in inputs.items()}
    flops = train_step_flops(fit_model, model.backbone, sample, batch)
    return {
        "impl": "kstory",
        "backend": keras.config.backend(),
        "platform": platform_name,
        "device": device_name,
        "shape": shape_name,
        "batch": batch,
        "image_size": shape.data.image_size,
        "dtype_policy": shape.model.dtype_policy,
        "jit_compile": str(jit_compile),
        "inputs": _input_kind(from_features, model),
        "replicas": replicas,
        "steps": steps,
        "build_s": round(build_s, 2),
        "compile_s": round(warm - start, 2),
        "step_ms": round(1000 * step_s, 2),
        # Three significant digits: one decimal place would round a slow
        # machine's 0.546 to 0.5.
        "samples_per_s": float(f"{batch / step_s:.3g}"),
        **utilisation(flops, step_s, platform_name == "gpu", shape.model.dtype_policy),
        "peak_host_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_device_memory_mib": _peak_device_memory_mib(),
        "params": model.count_params(),
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
    }
