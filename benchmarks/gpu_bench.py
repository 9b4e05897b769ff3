"""Runs the yardsticks and `kstory bench` one after the other on one machine
and writes their table and ratios: the GPU measurement of issue 6.

The yardsticks are ../shared/bench/peer_keras.py (plain Keras) and
peer_torch.py (PyTorch, eager and torch.compile); copy them into `.gpu/` so
that they travel to the device machine. Neither they nor `kstory bench` need
TensorFlow.

Usage (repository root, on the device machine, with JAX and torch):
    python benchmarks/gpu_bench.py --yardsticks .gpu --report results/bench_gpu.md
A dry run on a CPU, tiny shapes:
    python benchmarks/gpu_bench.py --yardsticks ../shared/bench --dry-run
"""

import argparse
import json
import os
import subprocess
import sys
import time

# Small enough for a CPU: checks the script, not the speed.
_DRY_RUN_PEER = [
    "--batch",
    "2",
    "--steps",
    "1",
    "--img",
    "32",
    "--out_img",
    "32",
    "--seq",
    "8",
    "--vocab",
    "100",
    "--layers",
    "2",
    "--hidden",
    "64",
]


def _runs(yardsticks, dry_run):
    peer = _DRY_RUN_PEER if dry_run else []
    shape = (
        ["--shape", "tiny", "--steps", "1", "--warmup-steps", "1"]
        if dry_run
        else ["--shape", "paper", "--steps", "20"]
    )
    kstory = [sys.executable, "-m", "kstory.cli", "bench", "--json", *shape]
    return [
        ("plain Keras, JAX", "jax", [sys.executable, f"{yardsticks}/peer_keras.py", *peer]),
        ("torch eager", "torch", [sys.executable, f"{yardsticks}/peer_torch.py", *peer]),
        (
            "torch.compile",
            "torch",
            [sys.executable, f"{yardsticks}/peer_torch.py", "--compile", *peer],
        ),
        ("kstory, JAX", "jax", kstory),
        ("kstory, JAX, from caches", "jax", [*kstory, "--features"]),
        ("kstory, torch backend", "torch", kstory),
        ("kstory, torch backend, from caches", "torch", [*kstory, "--features"]),
    ]


def _run(command, backend, timeout):
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command,
            env=dict(os.environ, KERAS_BACKEND=backend),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {
            "error": result.stderr.strip().splitlines()[-1][:200] if result.stderr else "failed"
        }
    measured = json.loads(lines[-1])
    measured["wall_s"] = round(time.perf_counter() - start, 1)
    return measured


def _ratio(results, slower, faster):
    a, b = results.get(slower, {}).get("step_ms"), results.get(faster, {}).get("step_ms")
    return f"{a / b:.2f}" if a and b else "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yardsticks", default=".gpu")
    parser.add_argument("--timeout", type=int, default=240, help="Seconds per run.")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--report")
    args = parser.parse_args()

    results = {}
    for name, backend, command in _runs(args.yardsticks, args.dry_run):
        results[name] = _run(command, backend, args.timeout)
        print(name, json.dumps(results[name]), flush=True)
    device = next((r["device"] for r in results.values() if "device" in r), "unknown")
    lines = [
        f"Device: `{device}`. One run, one machine, in this order; ratios are of ms/step.",
        "",
        "| build | ms/step | samples/s | GFLOP/step | MFU | compile or warm-up s | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        warm = result.get("compile_s", result.get("warmup_s", ""))
        lines.append(
            f"| {name} | {result.get('step_ms', '')} | "
            f"{result.get('samples_per_s', '')} | {result.get('gflops_per_step', '')} | "
            f"{result.get('mfu', '')} | {warm} | {result.get('error', '')} |"
        )
    lines += [
        "",
        "Goals (issue 6):",
        f"- plain Keras JAX / kstory JAX (aim ≥ 1.3): "
        f"{_ratio(results, 'plain Keras, JAX', 'kstory, JAX')}",
        f"- torch.compile / kstory JAX (aim ≥ 1.4): "
        f"{_ratio(results, 'torch.compile', 'kstory, JAX')}",
        f"- kstory torch / kstory JAX (aim ≤ 2): "
        f"{_ratio(results, 'kstory, torch backend', 'kstory, JAX')}",
        f"- kstory JAX from images / from caches: "
        f"{_ratio(results, 'kstory, JAX', 'kstory, JAX, from caches')}",
    ]
    table = "\n".join(lines)
    print(table)
    if args.report:
        from kstory.provenance import write_script_report

        write_script_report(
            args.report,
            "Train-step speed on a GPU, against the yardsticks",
            table,
            [f"{name}: {json.dumps(r)}" for name, r in results.items()],
        )


if __name__ == "__main__":
    main()
