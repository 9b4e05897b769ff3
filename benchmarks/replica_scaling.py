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


def bench(devices, arguments, data_parallel=True):
    from subprocess_bench import bench_in_subprocess

    flags = ["--data-parallel"] if data_parallel else []
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return bench_in_subprocess([*flags, *arguments], env, f"on {devices} devices")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--steps", default="20")
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--report")
    args = parser.parse_args()

    from kstory.provenance import write_script_report

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
        write_script_report(
            args.report,
            "Data-parallel replica scaling on CPU devices",
            table,
            [json.dumps(result) for result in [plain, *results]],
            backend="jax",
        )


if __name__ == "__main__":
    main()
