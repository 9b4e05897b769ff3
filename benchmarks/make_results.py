"""Regenerates every file in results/, in order, and records how in a manifest.

Run:  make results          (all of it: about 2.5 hours on 2 CPU cores)
      python benchmarks/make_results.py --only demo,seeds-tensorflow
      python benchmarks/make_results.py --list

Each step is the command a user would type; the steps run in the order their
inputs need: the exports, the demo page and the serving latency read `make
demo`'s run, and the quickstart timing, which empties `runs/tiny`, comes last. After each
step, `results/manifest.json` gets one entry per file the step wrote: the
file, the command, the kstory commit and tree state, the backend, the step's
duration and when it finished. Entries of steps not rerun are kept as they
were, so the manifest always says which commit made each file. A step that
fails stops the run with its exit code; the steps before it are recorded.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results")
MANIFEST = os.path.join(RESULTS, "manifest.json")
BIN = os.path.dirname(sys.executable)
KSTORY = os.path.join(BIN, "kstory")
PYTHON = sys.executable
TINY = ["--config", "configs/tiny.py"]
STORYBOARDS = ["tiny_7_storyboard.png", "tiny_10_storyboard.png", "tiny_18_storyboard.png"]


def _kstory(backend, *args):
    return [KSTORY, "--backend", backend, *args]


# (name, files written under results/, commands run one after the other).
STEPS = (
    (
        "demo",
        ["tiny_metrics.md", "tiny_loss_curve.png", *STORYBOARDS],
        [["make", "demo"]],
    ),
    (
        "seeds-tensorflow",
        ["tiny_seeds_tensorflow.md"],
        [
            _kstory(
                "tensorflow", "seeds", *TINY, "--workdir", "runs/seeds-tensorflow",
                "--report", "results/tiny_seeds_tensorflow.md",
            )
        ],
    ),
    (
        "seeds-jax",
        ["tiny_seeds_jax.md"],
        [
            _kstory(
                "jax", "seeds", *TINY, "--workdir", "runs/seeds-jax",
                "--report", "results/tiny_seeds_jax.md",
            )
        ],
    ),
    (
        "ablation",
        ["ablation.md"],
        [
            _kstory(
                "tensorflow", "ablate", *TINY, "--workdir", "runs/ablation",
                "--report", "results/ablation.md",
            )
        ],
    ),
    (
        "data",
        ["data_embedded_tiny.md"],
        [
            _kstory(
                "tensorflow", "data", *TINY, "--workdir", "runs/tiny-data",
                "--report", "results/data_embedded_tiny.md",
            )
        ],
    ),
    (
        "export-saved-model",
        ["export_tf_saved_model_check.md"],
        [
            _kstory("torch", "export", "--workdir", "runs/tiny"),
            _kstory(
                "jax", "serve-check", "--export", "runs/tiny/export/tf_saved_model",
                "--windows", "16", "--report", "results/export_tf_saved_model_check.md",
            ),
        ],
    ),
    (
        "export-onnx",
        ["export_onnx_check.md"],
        [
            _kstory("tensorflow", "export", "--workdir", "runs/tiny", "--format", "onnx"),
            _kstory(
                "tensorflow", "serve-check", "--export", "runs/tiny/export/onnx",
                "--windows", "16", "--report", "results/export_onnx_check.md",
            ),
        ],
    ),
    (
        "page",
        ["demo_page.md", "demo_page.png"],
        [["make", "results-page"]],
    ),
    (
        "bench-cpu",
        ["bench_cpu.md"],
        [
            [
                PYTHON, "benchmarks/compare_backends.py", "--shapes", "tiny,cpu",
                "--steps", "20", "--report", "results/bench_cpu.md",
            ]
        ],
    ),
    (
        "bench-epoch",
        ["bench_epoch_cpu.md"],
        [
            _kstory(
                "tensorflow", "bench", "--epoch", "--stories", "600",
                "--report", "results/bench_epoch_cpu.md",
            )
        ],
    ),
    (
        "replica-scaling",
        ["replica_scaling_cpu.md"],
        [[PYTHON, "benchmarks/replica_scaling.py", "--report", "results/replica_scaling_cpu.md"]],
    ),
    (
        "serving-latency",
        ["serving_latency_cpu.md"],
        [
            [
                PYTHON, "benchmarks/serving_latency.py", "--export",
                "runs/tiny/export/tf_saved_model", "--report", "results/serving_latency_cpu.md",
            ]
        ],
    ),
    (
        "quickstart-time",
        ["quickstart_time.md"],
        [[PYTHON, "benchmarks/time_quickstart.py", "--report", "results/quickstart_time.md"]],
    ),
)  # fmt: skip
STEP_NAMES = [name for name, _, _ in STEPS]


def _shown(command):
    """The command as a user types it (`kstory`, `python`, not the venv's paths)."""
    words = [
        "kstory" if word == KSTORY else "python" if word == PYTHON else word for word in command
    ]
    return " ".join(words)


def _load_manifest():
    if not os.path.exists(MANIFEST):
        return {"files": {}}
    with open(MANIFEST) as file:
        return json.load(file)


def _write_manifest(manifest):
    incoming = MANIFEST + ".incoming"
    with open(incoming, "w") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(incoming, MANIFEST)


def run_step(name, outputs, commands, manifest):
    """Runs one step's commands, then records its files in `manifest`."""
    # Imported here: `import kstory` loads Keras, which `--list` does not need.
    from kstory import provenance

    print(f"== {name}: {' && '.join(_shown(c) for c in commands)}", flush=True)
    start = time.monotonic()
    for command in commands:
        done = subprocess.run(command, cwd=REPO)
        if done.returncode:
            raise SystemExit(
                f"make_results: step {name!r} failed (exit {done.returncode}): {_shown(command)}"
            )
    duration = time.monotonic() - start
    missing = [path for path in outputs if not os.path.exists(os.path.join(RESULTS, path))]
    if missing:
        raise SystemExit(f"make_results: step {name!r} did not write results/{missing}.")
    finished = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for path in outputs:
        manifest["files"][path] = {
            "step": name,
            "command": " && ".join(_shown(c) for c in commands),
            # The commit and tree state as each results file's header records them.
            "kstory_commit": provenance._git_commit(),
            "kstory_tree": provenance._git_tree(),
            "duration_s": round(duration, 1),
            "finished": finished,
        }
    _write_manifest(manifest)
    print(f"== {name}: {duration:.0f} s", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"Comma-separated steps, from: {', '.join(STEP_NAMES)}.")
    parser.add_argument("--list", action="store_true", help="List the steps and stop.")
    args = parser.parse_args(argv)
    if args.list:
        for name, outputs, commands in STEPS:
            print(f"{name}: {', '.join(outputs)} <- {' && '.join(_shown(c) for c in commands)}")
        return 0
    chosen = STEP_NAMES if not args.only else [name.strip() for name in args.only.split(",")]
    unknown = [name for name in chosen if name not in STEP_NAMES]
    if unknown:
        parser.error(f"unknown steps {unknown}; known: {', '.join(STEP_NAMES)}")
    manifest = _load_manifest()
    for name, outputs, commands in STEPS:
        if name in chosen:
            run_step(name, outputs, commands, manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
