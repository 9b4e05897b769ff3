"""Times the README quickstart's main job, `make demo`, and records it.

Setting up (.venv) is not included: run it once first (`make setup`).

The machines vary by a quarter or more from hour to hour, so the demo runs
`--runs` times, one after the other, and the report gives every run, the
median, and where each run's time went (start-up, the first epoch with its
tracing, the later epochs, evaluation), from when `make demo`'s output lines
arrive.

Usage (from the repository root):
    python benchmarks/time_quickstart.py --runs 3 --report results/quickstart_time.md
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

# The first output line of each phase (`kstory train --evaluate`).
_MARKS = (("Epoch 1/", "epoch 1"), ("Epoch 2/", "epochs 2+"), ("Trained;", "evaluation"))


def time_demo():
    """One `make demo` from an empty runs/tiny: total seconds and per-phase seconds."""
    subprocess.run(["rm", "-rf", "runs/tiny"], check=True)
    start = time.perf_counter()
    seen = {}
    with subprocess.Popen(
        ["make", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Each line as it is printed, so that its arrival time is its phase's.
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        output = []
        for line in process.stdout:
            output.append(line)
            for mark, phase in _MARKS:
                if mark in line and phase not in seen:
                    seen[phase] = time.perf_counter() - start
    total = time.perf_counter() - start
    if process.returncode:
        sys.stderr.write("".join(output[-40:]))
        raise SystemExit(f"make demo failed (exit {process.returncode}).")
    phases, previous, previous_name = {}, 0.0, "start-up"
    for _, phase in _MARKS:
        if phase in seen:
            phases[previous_name] = seen[phase] - previous
            previous, previous_name = seen[phase], phase
    phases[previous_name] = total - previous
    return total, phases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", required=True)
    parser.add_argument("--runs", type=int, default=3, help="Demo runs, one after the other.")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1.")

    runs = []
    for index in range(args.runs):
        total, phases = time_demo()
        runs.append((total, phases))
        print(f"make demo, run {index + 1}/{args.runs}: {total:.0f} s", flush=True)
    totals = [total for total, _ in runs]
    median = statistics.median(totals)

    from kstory.provenance import provenance
    from kstory.provenance import provenance_markdown

    record = provenance("configs/tiny.py")
    record["command"] = "python " + " ".join(sys.argv)
    names = list(runs[0][1])
    lines = [
        "# README quickstart: `make demo` wall time",
        "",
        "Produced by:",
        "",
        provenance_markdown(record),
        "",
        f"`make demo` from an empty `runs/tiny`, with `.venv` already set up (setup time not "
        f"included), {len(runs)} run(s) one after the other: median **{median:.0f} s** "
        f"(min {min(totals):.0f} s, max {max(totals):.0f} s). It trains the tiny config, "
        "evaluates it beside the floors and writes results/tiny_*.",
        "",
        "| run | total s | " + " | ".join(f"{name} s" for name in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for index, (total, phases) in enumerate(runs):
        cells = " | ".join(f"{phases.get(name, float('nan')):.1f}" for name in names)
        lines.append(f"| {index + 1} | {total:.1f} | {cells} |")
    lines += [
        "",
        "Phases from when `make demo`'s output lines arrive: start-up (imports, drawing the "
        "embedded stories, building the model), epoch 1 (with tracing the train and "
        "validation steps), the later epochs, then evaluation and writing the results.",
    ]
    with open(args.report, "w") as file:
        file.write("\n".join(lines) + "\n")
    print(f"make demo: median {median:.0f} s over {len(runs)} run(s)")


if __name__ == "__main__":
    main()
