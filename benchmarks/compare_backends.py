"""Runs `kstory bench` under each Keras backend, one after the other, and
writes their ratios: machines are noisy, so only numbers from one run are
compared.

Usage (from the repository root):
    python benchmarks/compare_backends.py --shape tiny --report results/bench_cpu.md
"""

import argparse
import json

BACKENDS = ("tensorflow", "jax", "torch")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--steps", default="20")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--report", help="Write the table, with provenance, here.")
    args = parser.parse_args()

    from subprocess_bench import bench_in_subprocess

    from kstory.provenance import write_script_report

    results = [
        bench_in_subprocess(
            ["--shape", args.shape, "--steps", args.steps],
            {"KERAS_BACKEND": backend},
            f"under {backend}",
        )
        for backend in args.backends.split(",")
    ]
    fastest = min(result["step_ms"] for result in results)
    lines = [
        f"`kstory bench --shape {args.shape} --steps {args.steps}` under each backend, "
        "one after the other in one run:",
        "",
        "| backend | device | ms/step | samples/s | × fastest | compile s | peak host MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result['backend']} | {result['device']} | {result['step_ms']} | "
            f"{result['samples_per_s']} | {result['step_ms'] / fastest:.2f} | "
            f"{result['compile_s']} | {result['peak_host_memory_mib']} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.report:
        write_script_report(
            args.report,
            "Train-step speed on CPU, by backend",
            table,
            [json.dumps(result) for result in results],
        )


if __name__ == "__main__":
    main()
