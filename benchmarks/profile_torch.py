"""Profiles kstory's train step on the torch backend: where the time goes.

Runs a few train steps of a `kstory bench` shape under `torch.profiler` and
prints the operators that take the most time, the number of operator calls
per step (each is one eager dispatch from Python), and the share of the step
spent in the recurrent layers.

Usage (from the repository root):
    KERAS_BACKEND=torch python benchmarks/profile_torch.py --shape tiny --steps 5
"""

import argparse
import collections
import functools
import os

os.environ["KERAS_BACKEND"] = "torch"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()

    import keras
    import torch

    from kstory.bench.train_step_bench import BENCH_SHAPES
    from kstory.bench.train_step_bench import synthetic_batches
    from kstory.models.builders import build_story_model

    shape = BENCH_SHAPES[args.shape]
    keras.utils.set_random_seed(0)
    model = build_story_model(shape.model, shape.data, None, vocabulary_size=shape.vocabulary_size)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    batch = shape.data.batch_size
    inputs, targets = synthetic_batches(shape, batch * args.steps)
    fit = functools.partial(
        keras.Model.fit,
        model,
        inputs,
        targets,
        batch_size=batch,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    fit(steps_per_epoch=1)  # Warm-up.
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=False) as profile:
        fit(steps_per_epoch=args.steps)
    events = profile.key_averages()
    sort_key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(events.table(sort_by=sort_key, row_limit=args.rows))
    calls = sum(event.count for event in events if event.key.startswith("aten::"))
    print(f"aten operator calls per step: {calls / args.steps:.0f}")
    by_family = collections.Counter()
    for event in events:
        if event.key.startswith("aten::"):
            by_family[event.key] += event.self_cpu_time_total
    total = sum(by_family.values())
    print("self CPU time by operator, % of all aten time:")
    for name, value in by_family.most_common(args.rows):
        print(f"  {name:40s} {100 * value / total:5.1f}%")


if __name__ == "__main__":
    main()
