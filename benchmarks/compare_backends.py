"""Runs `kstory bench` under each Keras backend, one after the other, and
writes their ratios: machines are noisy, so only numbers from one run are
compared.

Usage (from the repository root):
    python benchmarks/compare_backends.py --shapes tiny,cpu --report results/bench_cpu.md
"""

import argparse
import json

BACKENDS = ("tensorflow", "jax", "torch")


def _shape_table(shape, steps, results):
    """One shape's rows, each backend's time against the fastest, with MFU."""
    fastest = min(result["step_ms"] for result in results)
    lines = [
        f"### `--shape {shape}`",
        "",
        f"`kstory bench --shape {shape} --steps {steps}` under each backend:",
        "",
        "| backend | device | ms/step | samples/s | × fastest | GFLOP/step | MFU | compile s "
        "| peak host MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result['backend']} | {result['device']} | {result['step_ms']} | "
            f"{result['samples_per_s']} | {result['step_ms'] / fastest:.2f} | "
            f"{result['gflops_per_step']} | {result['mfu']:.2%} | {result['compile_s']} | "
            f"{result['peak_host_memory_mib']} |"
        )
    components = results[0]["gflops_by_component"]
    lines += [
        "",
        "Where the step's FLOPs go (analytic count, `kstory.bench.flops`; the same on every "
        "backend):",
        "",
        "| component | GFLOP/step | share |",
        "|---|---|---|",
        *(
            f"| {name} | {value} | {value / results[0]['gflops_per_step']:.1%} |"
            for name, value in components.items()
        ),
        "",
        f"Peak: {results[0]['peak_tflops']} TFLOP/s ({results[0]['peak_source']}).",
    ]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,cpu")
    parser.add_argument("--steps", default="20")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--report", help="Write the tables, with provenance, here.")
    args = parser.parse_args()

    from subprocess_bench import bench_in_subprocess

    from kstory.provenance import write_script_report

    lines, raw = ["Each shape under each backend, one after the other in one run.", ""], []
    for shape in args.shapes.split(","):
        results = [
            bench_in_subprocess(
                ["--shape", shape, "--steps", args.steps],
                {"KERAS_BACKEND": backend},
                f"--shape {shape} under {backend}",
            )
            for backend in args.backends.split(",")
        ]
        lines += _shape_table(shape, args.steps, results) + [""]
        raw += [json.dumps(result) for result in results]
    table = "\n".join(lines)
    print(table)
    if args.report:
        write_script_report(args.report, "Train-step speed on CPU, by backend", table, raw)


if __name__ == "__main__":
    main()
