"""Profiles kstory's train step on the torch backend: where the time goes.

Runs a few train steps of a `kstory bench` shape under `torch.profiler` and
prints where a step's wall time goes (each component's forward pass, the
loss, the optimizer's update, the backward pass), the operators that take the
most time, the number of operator calls per step (each is one eager dispatch
from Python), and the Python cost of one Keras layer call against torch's.

Usage (from the repository root):
    KERAS_BACKEND=torch python benchmarks/profile_torch.py --shape tiny --steps 5
"""

import argparse
import collections
import contextlib
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
        with _component_ranges(model):
            fit(steps_per_epoch=args.steps)
    events = profile.key_averages()
    _print_components(events, args.steps)
    print(f"Keras layer calls per step: {LAYER_CALLS[0] / args.steps:.0f}")
    _print_layer_call_overhead()
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


LAYER_CALLS = [0]


@contextlib.contextmanager
def _component_ranges(model):
    """Marks each component's forward pass, the loss and the optimizer's
    update as profiler ranges named `kstory/<part>`."""
    import torch

    from kstory.bench.flops import component_labels
    from kstory.bench.flops import wrapping_layer_calls

    labels = component_labels(model.backbone)

    def ranged(call, layer, *args, **kwargs):
        LAYER_CALLS[0] += 1
        label = labels.get(id(layer))
        if label is None:
            return call(layer, *args, **kwargs)
        with torch.profiler.record_function(f"kstory/forward: {label}"):
            return call(layer, *args, **kwargs)

    def wrap(name, function):
        def ranged_function(*args, **kwargs):
            with torch.profiler.record_function(f"kstory/{name}"):
                return function(*args, **kwargs)

        return ranged_function

    model.compute_loss = wrap("loss", model.compute_loss)
    model.optimizer.apply = wrap("optimizer update", model.optimizer.apply)
    model.train_step = wrap("train step", model.train_step)
    with wrapping_layer_calls(ranged):
        yield
    for name in ("compute_loss", "train_step"):
        delattr(model, name)
    del model.optimizer.apply


def _print_layer_call_overhead(calls=3000):
    """The Python cost of one call of a tiny Keras layer, against torch's own."""
    import time

    import keras
    import torch

    inputs, dense, linear = torch.ones((2, 4)), keras.layers.Dense(4), torch.nn.Linear(4, 4)
    dense(inputs)
    print("one call on a (2, 4) input, Python included:")
    for name, call in (
        ("keras.layers.Dense", lambda: dense(inputs)),
        ("keras.ops.matmul", lambda: keras.ops.matmul(inputs, dense.kernel)),
        ("torch.nn.Linear", lambda: linear(inputs)),
    ):
        for _ in range(100):
            call()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        print(f"  {name:20s} {(time.perf_counter() - start) / calls * 1e6:6.1f} us")


def _print_components(events, steps):
    """Each part's wall time per step; the backward pass is the step's rest."""
    parts = {
        event.key[len("kstory/") :]: event.cpu_time_total / 1000 / steps
        for event in events
        if event.key.startswith("kstory/")
    }
    step = parts.pop("train step")
    parts["backward (the rest of the step)"] = step - sum(parts.values())
    print(f"where a train step's {step:.1f} ms go (CPU wall time of each part):")
    for name, milliseconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"  {name:45s} {milliseconds:7.1f} ms {100 * milliseconds / step:5.1f}%")


if __name__ == "__main__":
    main()
