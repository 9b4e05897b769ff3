"""Times the README quickstart's main job, `make demo`, and records it.

Setting up (.venv) is not included: run it once first (`make setup`).

Usage (from the repository root):
    python benchmarks/time_quickstart.py --report results/quickstart_time.md
"""

import argparse
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    subprocess.run(["rm", "-rf", "runs/tiny"], check=True)
    start = time.perf_counter()
    subprocess.run(
        ["make", "demo"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    total = time.perf_counter() - start

    from kstory.provenance import provenance
    from kstory.provenance import provenance_markdown

    record = provenance("configs/tiny.py")
    record["command"] = "python " + " ".join(sys.argv)
    with open(args.report, "w") as file:
        file.write("# README quickstart: `make demo` wall time\n\nProduced by:\n\n")
        file.write(provenance_markdown(record) + "\n\n")
        file.write(
            f"`make demo` from an empty `runs/tiny`, with `.venv` already set up (setup "
            f"time not included): **{total:.0f} s** (train the tiny config, evaluate it "
            "beside the floors, write results/tiny_*).\n"
        )
    print(f"make demo: {total:.0f} s")


if __name__ == "__main__":
    main()
