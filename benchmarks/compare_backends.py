"""Runs `kstory bench` under each Keras backend, one after the other, and
writes their ratios: machines are noisy, so only numbers from one run are
compared.

Usage (from the repository root):
    python benchmarks/compare_backends.py --shape tiny --report results/bench_cpu.md
"""

import argparse
import json
import os
import subprocess
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def bench(backend, arguments):
    result = subprocess.run(
        [sys.executable, "-m", "kstory.cli", "--backend", backend, "bench", "--json", *arguments],
        env=dict(os.environ, KERAS_BACKEND=backend), capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"kstory bench under {backend} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--steps", default="20")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--report", help="Write the table, with provenance, here.")
    args = parser.parse_args()

    from kstory.provenance import provenance
    from kstory.provenance import provenance_markdown

    results = [bench(backend, ["--shape", args.shape, "--steps", args.steps])
               for backend in args.backends.split(",")]
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
        record = provenance()
        record["command"] = "python " + " ".join(sys.argv)
        with open(args.report, "w") as file:
            file.write("# Train-step speed on CPU, by backend\n\nProduced by:\n\n")
            file.write(provenance_markdown(record) + "\n\n" + table + "\n\n")
            file.write("Raw results:\n\n```\n")
            file.write("\n".join(json.dumps(result) for result in results) + "\n```\n")


if __name__ == "__main__":
    main()
