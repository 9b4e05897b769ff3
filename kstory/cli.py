"""The `kstory` command line: a thin layer over library functions.

Each command is a handler and, beside it, the function that declares its
arguments; `main` parses, selects the backend and maps errors to exit codes.
"""

import argparse
import contextlib
import json
import logging
import os
import sys

_COMMANDS = {}


def _command(name, help, arguments, writes_workdir=False):
    """Registers the decorated handler as `kstory NAME`, with its `arguments(parser)`.

    A command that writes into `--workdir` holds the workdir's lock while it
    runs (`WorkdirLock`): one writer at a time.
    """

    def register(handler):
        _COMMANDS[name] = (help, arguments, handler, writes_workdir)
        return handler

    return register


def _config_arguments(command):
    command.add_argument("--config", required=True, help="A config file, e.g. configs/tiny.py.")
    command.add_argument("--workdir", required=True, help="The run's folder.")
    command.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config value, e.g. data.batch_size=8.",
    )
    command.add_argument("--smoke", action="store_true", help="The config's smoke variant.")


def _report_argument(command, what="the result"):
    command.add_argument("--report", help=f"Also write {what}, with provenance, to this file.")


def _evaluation_output_arguments(command):
    _report_argument(command, "the metrics")
    command.add_argument(
        "--storyboards", type=int, default=3, help="Storyboards of the first N held-out stories."
    )


def _load_config(args):
    from kstory.config import apply_overrides
    from kstory.config import load_config

    return apply_overrides(load_config(args.config, smoke=args.smoke), args.set)


def _write_report(path, title, body, config_path=None):
    from kstory.provenance import provenance
    from kstory.provenance import write_report

    write_report(path, title, body, provenance(config_path))


def _data_arguments(command):
    _config_arguments(command)
    _report_argument(command, "the summary")


@_command(
    "data",
    "Build or read the configured data and print a summary.",
    _data_arguments,
    writes_workdir=True,
)
def _data(args):
    import keras

    from kstory.config import config_to_dict
    from kstory.data import summary as data_summary
    from kstory.workdir import write_json

    config = _load_config(args)
    os.makedirs(args.workdir, exist_ok=True)
    write_json(os.path.join(args.workdir, "data_config.json"), config_to_dict(config))
    print(f"keras backend: {keras.config.backend()}")
    summary = data_summary.summarize_data(config.data, os.path.join(args.workdir, "data"))
    write_json(os.path.join(args.workdir, "data_summary.json"), summary)
    text = data_summary.format_summary(summary)
    print(text)
    if args.report:
        _write_report(args.report, "Data summary", f"```\n{text}\n```", args.config)


def _train_arguments(command):
    _config_arguments(command)
    command.add_argument(
        "--coordinator-address",
        help="Multi-host JAX (distribution=data_parallel): host:port of process 0; else "
        "KERAS_DISTRIBUTION_* variables are read.",
    )
    command.add_argument("--num-processes", type=int, help="Multi-host JAX: number of processes.")
    command.add_argument("--process-id", type=int, help="Multi-host JAX: this process's index.")
    command.add_argument(
        "--evaluate",
        action="store_true",
        help="Then score the test split as `kstory evaluate` does, in this process "
        "(no second start-up and model load); --report and --storyboards apply to it.",
    )
    _evaluation_output_arguments(command)


@_command(
    "train", "Train a config into a workdir (resumes).", _train_arguments, writes_workdir=True
)
def _train(args):
    from kstory.training.train import train

    if args.report and not args.evaluate:
        raise ValueError("--report writes the evaluation's metrics; add --evaluate.")
    model = train(
        _load_config(args),
        args.workdir,
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        config_path=args.config,
    )
    print(f"Trained; model and history in {args.workdir}")
    if args.evaluate:
        _score_and_report(args.workdir, "test", "greedy", args.storyboards, args.report, model)


def _evaluate_arguments(command):
    command.add_argument("--workdir", required=True)
    command.add_argument("--split", default="test", choices=("test", "validation", "train"))
    command.add_argument("--sampler", default="greedy", help="greedy, beam, top_p, ...")
    _evaluation_output_arguments(command)


@_command(
    "evaluate",
    "Score a trained workdir beside the floors.",
    _evaluate_arguments,
    writes_workdir=True,
)
def _evaluate(args):
    _score_and_report(args.workdir, args.split, args.sampler, args.storyboards, args.report)


def _score_and_report(workdir, split, sampler, storyboards, report, model=None):
    """`kstory evaluate`: scores, prints, and writes the report with provenance."""
    from kstory.evaluation.evaluate import evaluate
    from kstory.evaluation.evaluate import format_metrics
    from kstory.provenance import provenance_markdown
    from kstory.workdir import CONFIG_FILE
    from kstory.workdir import TRAIN_PROVENANCE_FILE

    metrics = evaluate(workdir, split, sampler, model=model, storyboards=storyboards)
    print(format_metrics(metrics))
    print("storyboards:", ", ".join(metrics.get("storyboards", [])))
    if report:
        body = format_metrics(metrics)
        trained_by = os.path.join(workdir, TRAIN_PROVENANCE_FILE)
        if os.path.exists(trained_by):
            with open(trained_by) as file:
                record = provenance_markdown(json.load(file))
            body = f"The model was trained by:\n\n{record}\n\n{body}"
        _write_report(report, "Metrics", body, os.path.join(workdir, CONFIG_FILE))


def _check_claims_arguments(command):
    command.add_argument(
        "--workdir", required=True, help="A run scored by `kstory evaluate` (its metrics.json)."
    )


@_command(
    "check-claims",
    "Check a scored run against the README's headline claims; exit 1 naming those that fail.",
    _check_claims_arguments,
)
def _check_claims(args):
    from kstory.evaluation import claims

    metrics = claims.load_metrics(args.workdir)
    results = claims.check_claims(metrics)
    print(
        f"Claims of the README on {os.path.join(args.workdir, 'metrics.json')} "
        f"({metrics.get('split', '?')} split, {metrics.get('windows', '?')} windows):"
    )
    print(claims.format_claims(results))
    failed = claims.failed_claims(results)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} claims fail: {', '.join(failed)}.")


def _ablate_arguments(command):
    _config_arguments(command)
    command.add_argument(
        "--variants",
        help="Comma-separated runs, from: full, no contrastive, no bag-of-words, "
        "captions only, images only (default: every one that changes the config).",
    )
    _report_argument(command, "the comparison")


@_command(
    "ablate",
    "Train a config as is, without the contrastive loss, without the bag-of-words loss, "
    "and with captions or images alone; compare.",
    _ablate_arguments,
    writes_workdir=True,
)
def _ablate(args):
    from kstory.evaluation.ablation import format_ablation
    from kstory.evaluation.ablation import run_ablation

    variants = args.variants and [name.strip() for name in args.variants.split(",")]
    table = format_ablation(run_ablation(_load_config(args), args.workdir, variants=variants))
    print(table)
    if args.report:
        title = "Ablation: what each loss term and each modality buy"
        _write_report(args.report, title, table, args.config)


def _seeds_arguments(command):
    _config_arguments(command)
    command.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds.")
    _report_argument(command, "the spread")


@_command(
    "seeds",
    "Train and score a config under several seeds; report the spread.",
    _seeds_arguments,
    writes_workdir=True,
)
def _seeds(args):
    from kstory.evaluation.seed_spread import format_seed_spread
    from kstory.evaluation.seed_spread import run_seeds

    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers; got {args.seeds!r}.")
    table = format_seed_spread(run_seeds(_load_config(args), args.workdir, seeds))
    print(table)
    if args.report:
        _write_report(args.report, "Headline scores over seeds", table, args.config)


def _predict_arguments(command):
    command.add_argument("--workdir", required=True)
    command.add_argument(
        "--story", required=True, help="A story id, or a folder of frames and captions.txt."
    )
    command.add_argument("--start", type=int, default=0, help="First context frame (0-based).")
    command.add_argument("--sampler", default="greedy")


@_command("predict", "Predict the next step of one story.", _predict_arguments, writes_workdir=True)
def _predict(args):
    from kstory.evaluation.predict import predict

    result = predict(args.workdir, args.story, args.start, args.sampler)
    print(f"next caption: {result['caption']}")
    if "entities" in result:
        from kstory.data.entities import entities_line

        line = entities_line(result["entities"], result["new_entity_kinds"])
        print(f"next entities: {line or 'none'}")
    print(f"next image: {result['image_path']}")
    print(f"storyboard: {result['storyboard_path']}")


def _export_arguments(command):
    command.add_argument("--workdir", required=True)
    command.add_argument("--format", default="tf_saved_model", choices=("tf_saved_model", "onnx"))
    command.add_argument("--output", help="Export folder; default <workdir>/export/<format>.")


@_command(
    "export",
    "Export a trained workdir for serving (SavedModel or ONNX).",
    _export_arguments,
    writes_workdir=True,
)
def _export(args):
    from kstory.export.workdir_export import export_workdir

    path = export_workdir(args.workdir, args.format, args.output)
    print(f"Exported {args.format} to {path}")


def _serve_check_arguments(command):
    command.add_argument("--export", required=True, help="A folder from kstory export.")
    command.add_argument("--workdir", help="Its run; default two levels above --export.")
    command.add_argument("--split", default="test", choices=("test", "validation", "train"))
    command.add_argument("--windows", type=int, default=8, help="Held-out windows to run.")
    command.add_argument("--atol", type=float, default=1e-5)
    _report_argument(command, "the table")


@_command(
    "serve-check",
    "Run an export on held-out stories; compare with the Keras model.",
    _serve_check_arguments,
)
def _serve_check(args):
    from kstory.export.serve_check import format_serve_check
    from kstory.export.serve_check import serve_check
    from kstory.workdir import CONFIG_FILE

    report = serve_check(args.export, args.workdir, args.split, args.windows, args.atol)
    print(format_serve_check(report))
    if args.report:
        config = os.path.join(report["workdir"], CONFIG_FILE)
        _write_report(args.report, "Export check", format_serve_check(report), config)
    return 0 if report["ok"] else 1


def _demo_arguments(command):
    command.add_argument("--workdir", required=True, help="A trained run's folder.")
    command.add_argument(
        "--export", help="Predict with this SavedModel export (greedy) instead of model.keras."
    )
    command.add_argument("--port", type=int, default=7860)
    command.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to bind; the default serves this machine only, 0.0.0.0 every interface.",
    )
    command.add_argument("--stories", type=int, default=24, help="Held-out stories shown.")


@_command(
    "demo",
    "Serve a page to try a trained run in the browser (Gradio; no share link).",
    _demo_arguments,
)
def _demo(args):
    # First: it turns off Gradio's usage reports before Gradio is imported.
    from kstory.serving.demo_page import serve_demo

    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        raise RuntimeError("kstory demo needs Gradio: pip install -e '.[app]' (make app does).")
    serve_demo(args.workdir, args.export, args.port, args.host, args.stories)


def _bench_arguments(command):
    command.add_argument(
        "--shape", help="tiny, cpu or paper (see kstory.bench); default tiny, and cpu with --epoch."
    )
    command.add_argument(
        "--epoch",
        action="store_true",
        help="Time training epochs on synthetic StoryReasoning-like stories, naive vs "
        "deduplicated feature cache (needs TensorFlow for tf.data).",
    )
    command.add_argument(
        "--stories",
        type=int,
        default=3552,
        help="With --epoch: synthetic stories (3552 is StoryReasoning's train split).",
    )
    command.add_argument("--epochs", type=int, default=2, help="With --epoch: epochs per run.")
    _report_argument(command)
    command.add_argument("--steps", type=int, default=20, help="Timed steps, after the warm-up.")
    command.add_argument("--warmup-steps", type=int, default=3, help="Untimed compile steps.")
    command.add_argument("--batch-size", type=int, help="Override the shape's batch size.")
    command.add_argument("--dtype-policy", help="Override the shape's precision.")
    command.add_argument("--jit-compile", default="auto", choices=("auto", "true", "false"))
    command.add_argument(
        "--features",
        action="store_true",
        help="Time the step from the caches (image features of a frozen encoder, and frozen "
        "text layers' states) instead of images.",
    )
    command.add_argument(
        "--data-parallel",
        action="store_true",
        help="Split the batch over all devices (JAX: keras.distribution; TF: MirroredStrategy).",
    )
    command.add_argument("--json", action="store_true", help="Print one JSON line only.")


@_command(
    "bench",
    "Time the train step on synthetic inputs of a named shape; with --epoch, whole epochs "
    "from images vs from the feature cache.",
    _bench_arguments,
)
def _bench(args):
    if args.epoch:
        # Imported here: the epoch benchmark needs tf.data; the step one does not.
        from kstory.bench.epoch_bench import run_epoch_bench

        result = run_epoch_bench(args.shape or "cpu", args.stories, args.epochs)
    else:
        from kstory.bench.train_step_bench import run_train_step_bench
        from kstory.training.train_config import jit_compile_argument

        result = run_train_step_bench(
            args.shape or "tiny",
            steps=args.steps,
            warmup_steps=args.warmup_steps,
            batch_size=args.batch_size,
            dtype_policy=args.dtype_policy,
            jit_compile=jit_compile_argument(args.jit_compile),
            from_features=args.features,
            data_parallel=args.data_parallel,
        )
    if not args.json:
        for name, value in result.items():
            print(f"{name:>25}: {value}")
    print(json.dumps(result))
    if args.report:
        title = "Epoch time: naive vs image cache vs image + text cache"
        summary = _epoch_summary(result) if args.epoch else ""
        if not args.epoch:
            title = "Train-step speed"
        rows = "\n".join(f"| {name} | {value} |" for name, value in result.items())
        body = f"{summary}| measure | value |\n|---|---|\n{rows}\n\nRaw result:\n\n```\n"
        _write_report(args.report, title, body + json.dumps(result) + "\n```")


def _epoch_summary(result):
    """The three epochs of `kstory bench --epoch` side by side (Markdown)."""
    runs = {"naive": "naive", "cached": "image cache", "text_cached": "image + text cache"}
    builds = {
        "naive": "none",
        "cached": f"{result['cache_build_s']} s",
        "text_cached": f"{result['cache_build_s']} + {result['text_cache_build_s']} s",
    }
    lines = [
        "| run | epoch s | × naive | GFLOP/step | MFU | one-time build |",
        "|---|---|---|---|---|---|",
    ]
    for run, name in runs.items():
        epoch_s = result[f"{run}_epoch_s"]
        lines.append(
            f"| {name} | {epoch_s} | {result['naive_epoch_s'] / epoch_s:.2f} | "
            f"{result[f'{run}_gflops_per_step']} | {result[f'{run}_mfu']:.2%} | {builds[run]} |"
        )
    return (
        "\n".join(lines) + f"\n\nSteady-state (last) epochs; peak {result['peak_tflops']} TFLOP/s "
        f"({result['peak_source']}).\n\n"
    )


def _parser():
    parser = argparse.ArgumentParser(
        prog="kstory", description="Visual story continuation with Keras 3."
    )
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax", "torch"),
        help="Keras backend; sets KERAS_BACKEND before Keras is imported.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Keep TensorFlow's C++ log (start-up notices, 'failed call to cuInit' without "
        "a GPU), which kstory otherwise hides.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help, arguments, _, _) in _COMMANDS.items():
        arguments(commands.add_parser(name, help=help))
    return parser


def _select_backend(backend, argv):
    """Applies `--backend` before Keras loads, re-running the command if needed.

    `import kstory` registers Keras classes, so Keras is already loaded when
    this runs; a different backend needs a fresh process.
    """
    if backend is None or backend == os.environ.get("KERAS_BACKEND"):
        return
    os.environ["KERAS_BACKEND"] = backend
    if "keras" not in sys.modules:
        return
    if argv is not None:
        raise ValueError(
            f"--backend {backend} must be chosen before Keras is imported; "
            "set KERAS_BACKEND instead when calling main() from Python."
        )
    os.execv(sys.executable, [sys.executable, "-m", "kstory.cli", *sys.argv[1:]])


def _one_line(error):
    """An error as the one line the CLI prints (library messages may wrap)."""
    return " ".join(str(error).split())


def _workdir_lock(workdir, command):
    if workdir is None:
        return contextlib.nullcontext()
    from kstory.workdir_lock import WorkdirLock

    return WorkdirLock(workdir, command)


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        _select_backend(args.backend, argv)
    except ValueError as error:
        print(f"kstory: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _, _, handler, writes_workdir = _COMMANDS[args.command]
    try:
        with _workdir_lock(args.workdir if writes_workdir else None, args.command):
            return handler(args) or 0
    except ValueError as error:
        print(f"kstory {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"kstory {args.command}: failed: {_one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
