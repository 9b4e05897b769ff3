"""`kstory bench --epoch`: a training epoch from images vs from the feature cache."""

import dataclasses
import io
import tempfile
import time

import keras
import numpy as np
from PIL import Image

from kstory.bench.flops import measured_peak_flops
from kstory.bench.flops import train_step_flops
from kstory.bench.train_step_bench import BENCH_SHAPES
from kstory.bench.train_step_bench import device
from kstory.data.feature_cache import build_feature_cache
from kstory.data.pipeline import make_train_stream
from kstory.data.pipeline import pipeline_options
from kstory.data.story import Story
from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.data.text_cache import build_text_cache
from kstory.data.tokenizer_loading import load_tokenizer
from kstory.data.windows import story_windows
from kstory.models.builders import build_story_model
from kstory.training.cached_feature_trainer import CachedFeatureTrainer

# StoryReasoning's train split: 3552 stories of 5-22 frames (median 13),
# about 44k frames and 30k 4->1 windows; frames are JPEG movie stills of
# about 575x240 (see ../shared/NOTES.md).
STORY_REASONING_TRAIN_STORIES = 3552
_STILL_SIZE = (240, 575)
_WORDS = (
    "man",
    "woman",
    "car",
    "door",
    "street",
    "window",
    "looks",
    "walks",
    "turns",
    "holds",
    "the",
    "a",
    "toward",
    "near",
    "quietly",
    "dark",
    "room",
    "light",
)


def synthetic_stories(num_stories, seed=0):
    """Stories shaped like StoryReasoning's: frame counts, still size, JPEG.

    Each frame is a distinct smooth image with a few blocks, encoded as JPEG
    at quality 90, so decoding costs about what a real still costs.
    """
    rng = np.random.default_rng(seed)
    counts = np.clip(np.round(rng.normal(12.4, 4.0, num_stories)), 5, 22).astype(int)
    height, width = _STILL_SIZE
    rows, columns = np.mgrid[0:height, 0:width]
    stories = []
    for index, count in enumerate(counts):
        images, texts = [], []
        for _ in range(count):
            corner, slope = rng.uniform(0, 200, 3), rng.uniform(-0.2, 0.2, (2, 3))
            frame = corner + rows[..., None] * slope[0] + columns[..., None] * slope[1]
            for _ in range(3):
                top, left = rng.integers(0, height - 40), rng.integers(0, width - 60)
                frame[top : top + 40, left : left + 60] = rng.uniform(0, 255, 3)
            buffer = io.BytesIO()
            Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).save(
                buffer, format="JPEG", quality=90
            )
            images.append(buffer.getvalue())
            texts.append(" ".join(rng.choice(_WORDS, size=24)) + ".")
        stories.append(Story(f"synthetic-{index}", tuple(images), tuple(texts)))
    return stories


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.seconds = []


def _learned_preprocessor(stories, shape):
    """A preprocessor with a vocabulary learned from the stories' texts."""
    texts = [text for story in stories for text in story.texts]
    return StoryTextPreprocessor(
        load_tokenizer("learned", texts, shape.vocabulary_size),
        shape.data.sequence_length,
        shape.data.decoder_sequence_length,
    )


def _one_pass_seconds(dataset):
    """Seconds to read `dataset` once, with no model."""
    start = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - start


def _timed_fit(fit_model, backbone, dataset, epochs, steps):
    """Fits `epochs` epochs; returns each epoch's seconds and the step's
    FLOPs (`kstory.bench.flops`, counted on one sample of the first batch)."""
    inputs, _ = next(iter(dataset))
    sample = {key: np.asarray(value)[:1] for key, value in inputs.items()}
    flops = train_step_flops(fit_model, backbone, sample, len(inputs["token_ids"]))["step"]
    timer = _EpochTimer()
    fit_model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return timer.seconds, flops


def _cached_run(stories, preprocessor, model, cache_dir, options, text, steps):
    """Builds the caches (timed) and trains from them: `(build seconds by
    cache, epoch seconds, FLOPs per step, caches)`.

    With `text`, the frozen text layers' states are read from their cache too.
    """
    start = time.perf_counter()
    caches = {"feature_cache": build_feature_cache(stories, model.backbone, f"{cache_dir}/images")}
    image_build_s = time.perf_counter() - start
    if text:
        caches["text_cache"] = build_text_cache(
            stories, model.backbone, preprocessor, f"{cache_dir}/text"
        )
    build_s = {"image": image_build_s, "text": time.perf_counter() - start - image_build_s}
    trainer = CachedFeatureTrainer(model)
    trainer.compile(optimizer=keras.optimizers.AdamW(1e-4))
    stream = make_train_stream(stories, preprocessor, **options, **caches)
    seconds, flops = _timed_fit(trainer, model.backbone, stream, options["epochs"], steps)
    return build_s, seconds, flops, caches


def run_epoch_bench(shape_name="cpu", num_stories=STORY_REASONING_TRAIN_STORIES, epochs=2, seed=0):
    """Times training epochs three ways, on synthetic stories: naive (decode
    and encode every window's frames and captions), from the image feature
    cache, and from the image and text caches (the frozen text layers'
    states of each caption too).

    The runs train the same model for `epochs` epochs over every 4->1
    window; the last epoch's time is the steady state (the first includes
    compilation). The caches' one-time builds (each unique frame decoded and
    encoded once; each distinct caption through the frozen text layers once
    per form) are timed separately, as is one pass of the naive input
    pipeline alone (decoding and resizing, no model).

    Args:
        shape_name: str. A key of `BENCH_SHAPES`; its image encoder is frozen
            here, as the cache requires, and it needs frozen text layers.
        num_stories: int. Synthetic stories; 3552 is StoryReasoning's train
            split.
        epochs: int. Epochs per run, at least 2.
        seed: int. Seed of the data and the weights.

    Returns:
        dict of the workload, the times and their ratios, JSON-ready.
    """
    if shape_name not in BENCH_SHAPES:
        raise ValueError(f"--shape must be one of {sorted(BENCH_SHAPES)}; got {shape_name!r}.")
    if epochs < 2:
        raise ValueError(f"The epoch benchmark needs at least 2 epochs; got {epochs}.")
    shape = BENCH_SHAPES[shape_name]
    model_config = dataclasses.replace(shape.model, freeze_image_encoder=True)
    data = shape.data
    start = time.perf_counter()
    stories = synthetic_stories(num_stories, seed)
    generate_s = time.perf_counter() - start
    preprocessor = _learned_preprocessor(stories, shape)
    num_windows = len(story_windows(stories, data.num_context_steps))
    steps = num_windows // data.batch_size
    options = dict(pipeline_options(data), seed=seed, epochs=epochs)
    decode_s = _one_pass_seconds(
        make_train_stream(stories, preprocessor, **{**options, "epochs": 1})
    )

    def fresh_model():
        keras.utils.set_random_seed(seed)
        return build_story_model(model_config, data, preprocessor)

    model = fresh_model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    stream = make_train_stream(stories, preprocessor, **options)
    naive, naive_flops = _timed_fit(model, model.backbone, stream, epochs, steps)
    with tempfile.TemporaryDirectory() as cache_dir:
        runs = [
            _cached_run(stories, preprocessor, fresh_model(), cache_dir, options, text, steps)
            for text in (False, True)
        ]
    (build_s, cached, cached_flops, _), (text_build_s, text_cached, text_cached_flops, caches) = (
        runs
    )
    return {
        "impl": "kstory",
        "backend": keras.config.backend(),
        "shape": shape_name,
        "batch": data.batch_size,
        "image_size": data.image_size,
        "frozen_text_layers": f"{model_config.num_frozen_text_layers} of "
        f"{model_config.tiny_text_layers}",
        "stories": num_stories,
        "frames": sum(story.num_frames for story in stories),
        "unique_frames": caches["feature_cache"].info["num_frames"],
        "unique_captions": caches["text_cache"].info["num_captions"],
        "windows": num_windows,
        "frame_slots_per_epoch": num_windows * (data.num_context_steps + 1),
        "steps_per_epoch": steps,
        "epochs": epochs,
        "generate_s": round(generate_s, 3),
        "naive_decode_only_epoch_s": round(decode_s, 3),
        **_epoch_figures(
            {"naive": naive, "cached": cached, "text_cached": text_cached},
            {"image": build_s["image"], "text": text_build_s["text"]},
        ),
        **_utilisation(
            {"naive": naive_flops, "cached": cached_flops, "text_cached": text_cached_flops},
            steps,
            {"naive": naive[-1], "cached": cached[-1], "text_cached": text_cached[-1]},
        ),
    }


def _epoch_figures(seconds, build_s):
    """Each run's first and steady epoch, the caches' builds and the ratios."""
    naive, cached, text_cached = seconds["naive"], seconds["cached"], seconds["text_cached"]
    return {
        "naive_first_epoch_s": round(naive[0], 3),
        "naive_epoch_s": round(naive[-1], 3),
        "cache_build_s": round(build_s["image"], 3),
        "cached_first_epoch_s": round(cached[0], 3),
        "cached_epoch_s": round(cached[-1], 3),
        "text_cache_build_s": round(build_s["text"], 3),
        "text_cached_first_epoch_s": round(text_cached[0], 3),
        "text_cached_epoch_s": round(text_cached[-1], 3),
        "epoch_speedup": round(naive[-1] / cached[-1], 2),
        "text_cache_epoch_speedup": round(naive[-1] / text_cached[-1], 2),
        "text_cache_over_image_cache": round(cached[-1] / text_cached[-1], 2),
        "speedup_over_run": round(sum(naive) / (build_s["image"] + sum(cached)), 2),
    }


def _utilisation(flops, steps, epochs_s):
    """Each run's FLOPs per step and its steady epoch's MFU, JSON-ready."""
    peak, peak_source = measured_peak_flops(device()[0] == "gpu")
    return {
        **{f"{run}_gflops_per_step": round(flops[run] / 1e9, 2) for run in flops},
        **{
            f"{run}_mfu": float(f"{flops[run] * steps / epochs_s[run] / peak:.3g}") for run in flops
        },
        "peak_tflops": float(f"{peak / 1e12:.3g}"),
        "peak_source": peak_source,
        "flops_method": "analytic, per layer (kstory.bench.flops)",
    }
