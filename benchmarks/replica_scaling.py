"""Measures kstory's train step over 1, 2 and 4 JAX CPU devices, one after
the other, at a fixed global batch, and writes the table.

The devices are slices of one CPU (`--xla_force_host_platform_device_count`):
the numbers check that data parallelism runs and what it costs, and say
nothing about GPU speed.

Usage (from the repository root):
    python benchmarks/replica_scaling.py --report results/replica_scaling_cpu.md
"""

import argparse
import json
import os
import subprocess
import sys


def bench(devices, arguments, data_parallel=True):
    flags = ["--data-parallel"] if data_parallel else []
    result = subprocess.run(
        [sys.executable, "-m", "kstory.cli", "bench", "--json", *flags, *arguments],
        env=dict(os.environ, KERAS_BACKEND="jax",
                 XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"),
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"kstory bench on {devices} devices failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--steps", default="20")
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--report")
    args = parser.parse_args()

    from kstory.provenance import provenance
    from kstory.provenance import provenance_markdown

    arguments = ["--shape", args.shape, "--steps", args.steps]
    plain = bench(1, arguments, data_parallel=False)
    results = [bench(int(count), arguments) for count in args.devices.split(",")]
    base = results[0]["step_ms"]
    lines = [
        f"`kstory bench --shape {args.shape} --steps {args.steps} --data-parallel` under JAX "
        "with 1, 2 and 4 CPU devices (one CPU split by "
        "`--xla_force_host_platform_device_count`), global batch fixed, one after the other "
        "in one run. CPU devices share the same cores, so this shows that data parallelism "
        "runs and its overhead; it says nothing about GPU speed.",
        "",
        "| replicas | batch per replica | ms/step | samples/s | × 1 replica |",
        "|---|---|---|---|---|",
        f"| no distribution | {plain['batch']} | {plain['step_ms']} | {plain['samples_per_s']} | "
        f"{plain['step_ms'] / base:.2f} |",
    ]
    for result in results:
        lines.append(
            f"| {result['replicas']} | {result['batch'] // result['replicas']} | "
            f"{result['step_ms']} | {result['samples_per_s']} | {result['step_ms'] / base:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.report:
        record = provenance()
        record["command"] = "python " + " ".join(sys.argv)
        record["backend"] = "jax"
        with open(args.report, "w") as file:
            file.write("# Data-parallel replica scaling on CPU devices\n\nProduced by:\n\n")
            file.write(provenance_markdown(record) + "\n\n" + table + "\n\nRaw results:\n\n```\n")
            file.write("\n".join(json.dumps(result) for result in [plain, *results]) + "\n```\n")


if __name__ == "__main__":
    main()
