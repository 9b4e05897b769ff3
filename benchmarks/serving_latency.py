"""Times the `serving_default` signature of a SavedModel export: one call,
raw frames and captions in, caption and frame out, by batch size.

Each batch repeats held-out windows of the export's workdir (their encoded
frames and captions, as a client sends them). Calls run one after the other
in this process, after one warm-up call per batch size; the table gives the
median and the spread of the timed calls.

Usage (from the repository root, after `kstory export --workdir runs/tiny`):
    python benchmarks/serving_latency.py --export runs/tiny/export/tf_saved_model \
        --report results/serving_latency_cpu.md
"""

import argparse
import json
import os
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, help="A SavedModel from `kstory export`.")
    parser.add_argument("--workdir", help="Its run; default: two levels up from --export.")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--calls", type=int, default=20, help="Timed calls per batch size.")
    parser.add_argument("--report", help="Write the table, with provenance, here.")
    args = parser.parse_args()

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokeniser's ops)

    from kstory.export.serve_check import held_out_windows
    from kstory.provenance import write_script_report

    workdir = args.workdir or os.path.dirname(os.path.dirname(os.path.abspath(args.export)))
    frames, captions, entities = held_out_windows(workdir, num_windows=16, entities=True)
    serving_default = tf.saved_model.load(args.export).signatures["serving_default"]
    # An export with a grounding head also takes each frame's entity ids.
    grounding = "entities" in serving_default.structured_input_signature[1]
    results = []
    for batch in (int(size) for size in args.batch_sizes.split(",")):
        rows = [index % len(frames) for index in range(batch)]
        inputs = {
            "images": tf.constant([frames[row] for row in rows]),
            "captions": tf.constant([captions[row] for row in rows]),
        }
        if grounding:
            inputs["entities"] = tf.constant(
                [[" ".join(ids) for ids in entities[row]] for row in rows]
            )
        serving_default(**inputs)  # Warm-up.
        seconds = []
        for _ in range(args.calls):
            start = time.perf_counter()
            serving_default(**inputs)["caption"].numpy()
            seconds.append(time.perf_counter() - start)
        milliseconds = 1000 * np.array(seconds)
        results.append(
            {
                "batch": batch,
                "calls": args.calls,
                "median_ms": round(float(np.median(milliseconds)), 1),
                "p10_ms": round(float(np.percentile(milliseconds, 10)), 1),
                "p90_ms": round(float(np.percentile(milliseconds, 90)), 1),
            }
        )
    lines = [
        f"`serving_default` of {args.export}: encoded frames and captions in, caption and "
        f"frame out; {args.calls} timed calls per batch size after one warm-up, one "
        "after the other in one process.",
        "",
        "| batch | median ms/call | p10–p90 ms | median ms/story |",
        "|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result['batch']} | {result['median_ms']} | {result['p10_ms']}–"
            f"{result['p90_ms']} | {result['median_ms'] / result['batch']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.report:
        write_script_report(
            args.report,
            "serving_default latency on CPU",
            table,
            [json.dumps(result) for result in results],
            backend="tensorflow (SavedModel)",
            config=os.path.join(workdir, "config.json"),
        )


if __name__ == "__main__":
    main()
