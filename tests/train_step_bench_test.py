import json
import os
import subprocess
import sys

import keras
import pytest

from kstory.bench.train_step_bench import BENCH_SHAPES
from kstory.bench.train_step_bench import run_train_step_bench
from kstory.bench.train_step_bench import synthetic_batches

# Runs `kstory bench` with TensorFlow made unimportable, as on the GPU
# machines, which carry JAX and PyTorch only.
WITHOUT_TENSORFLOW = """
import importlib.machinery
import sys


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_text"):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}")

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, Blocked())
from kstory.cli import main

code = main(sys.argv[1:])
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
sys.exit(code)
"""


def test_bench_measures_the_tiny_shape_on_this_backend():
    result = run_train_step_bench("tiny", steps=2, warmup_steps=1, batch_size=4)
    assert result["backend"] == keras.config.backend()
    assert result["batch"] == 4 and result["steps"] == 2
    assert result["step_ms"] > 0 and result["compile_s"] > 0
    assert result["samples_per_s"] == pytest.approx(4000 / result["step_ms"], rel=0.02)
    assert result["peak_host_memory_mib"] > 100
    assert 0 < result["trainable_params"] < result["params"]  # Text embeddings are frozen.
    assert result["mfu"] == pytest.approx(
        result["achieved_tflops"] / result["peak_tflops"], rel=0.01
    )
    assert result["achieved_tflops"] == pytest.approx(
        result["gflops_per_step"] / result["step_ms"], rel=0.01
    )
    assert sum(result["gflops_by_component"].values()) == pytest.approx(
        result["gflops_per_step"], abs=0.01
    )
    json.dumps(result)  # JSON-ready


def test_synthetic_batches_have_the_shape_sizes():
    shape = BENCH_SHAPES["paper"]
    inputs, targets = synthetic_batches(shape, 3)
    assert inputs["images"].shape == (3, 4, 224, 224, 3) and inputs["images"].dtype == "uint8"
    assert inputs["token_ids"].max() < shape.vocabulary_size
    assert targets["next_image"].shape == (3, 64, 64, 3)


def test_unknown_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="--shape must be one of"):
        run_train_step_bench("huge")


# The GPU machines carry JAX and PyTorch only. Subprocesses, so the pass of
# one backend checks both; `make test` runs it once.
@pytest.mark.single_backend
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bench_runs_without_tensorflow(tmp_path, backend):
    script = tmp_path / "without_tensorflow.py"
    script.write_text(WITHOUT_TENSORFLOW)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "bench",
            "--shape",
            "tiny",
            "--steps",
            "1",
            "--warmup-steps",
            "1",
            "--batch-size",
            "2",
            "--json",
        ],
        env=dict(os.environ, KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["backend"] == backend and measured["step_ms"] > 0


# The trainer itself runs on every backend in feature_cache_test; this is the
# bench's input wiring, run once.
@pytest.mark.single_backend
def test_bench_times_the_step_from_cached_features():
    result = run_train_step_bench("tiny", steps=1, warmup_steps=1, batch_size=2, from_features=True)
    assert result["inputs"] == "cached image features and text states"
    assert result["step_ms"] > 0
    # The frozen image encoder's weights are no longer trained.
    images = run_train_step_bench("tiny", steps=1, warmup_steps=1, batch_size=2)
    assert images["inputs"] == "images"
    assert result["trainable_params"] < images["trainable_params"]
    # Neither the image encoder nor the frozen text layer runs in a cached step.
    assert "image encoder" not in result["gflops_by_component"]
    cached_text, text = (r["gflops_by_component"]["text encoder"] for r in (result, images))
    assert 0 < cached_text < text
