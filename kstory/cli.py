"""The `kstory` command line: a thin layer over library functions."""

import argparse
import json
import logging
import os
import sys


def _add_config_arguments(command):
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


def _add_evaluation_output_arguments(command):
    command.add_argument("--report", help="Also write the metrics, with provenance, here.")
    command.add_argument(
        "--storyboards", type=int, default=3, help="Storyboards of the first N held-out stories."
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
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser(
        "data", help="Build or read the configured data and print a summary."
    )
    _add_config_arguments(data)
    data.add_argument("--report", help="Also write the summary, with provenance, to this file.")
    train = commands.add_parser("train", help="Train a config into a workdir (resumes).")
    _add_config_arguments(train)
    train.add_argument(
        "--coordinator-address",
        help="Multi-host JAX (distribution="
        "data_parallel): host:port of process 0; else KERAS_DISTRIBUTION_* "
        "variables are read.",
    )
    train.add_argument("--num-processes", type=int, help="Multi-host JAX: number of processes.")
    train.add_argument("--process-id", type=int, help="Multi-host JAX: this process's index.")
    train.add_argument(
        "--evaluate",
        action="store_true",
        help="Then score the test split as `kstory evaluate` does, in this process "
        "(no second start-up and model load); --report and --storyboards apply to it.",
    )
    _add_evaluation_output_arguments(train)
    evaluate = commands.add_parser("evaluate", help="Score a trained workdir beside the floors.")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--split", default="test", choices=("test", "validation", "train"))
    evaluate.add_argument("--sampler", default="greedy", help="greedy, beam, top_p, ...")
    _add_evaluation_output_arguments(evaluate)
    ablate = commands.add_parser(
        "ablate",
        help="Train a config as is, without the contrastive loss, without the "
        "bag-of-words loss, and with captions or images alone; compare.",
    )
    _add_config_arguments(ablate)
    ablate.add_argument(
        "--variants",
        help="Comma-separated runs, from: full, no contrastive, no bag-of-words, "
        "captions only, images only (default: every one that changes the config).",
    )
    ablate.add_argument("--report", help="Write the comparison, with provenance, here.")
    seeds = commands.add_parser(
        "seeds", help="Train and score a config under several seeds; report the spread."
    )
    _add_config_arguments(seeds)
    seeds.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds.")
    seeds.add_argument("--report", help="Write the spread, with provenance, here.")
    predict = commands.add_parser("predict", help="Predict the next step of one story.")
    predict.add_argument("--workdir", required=True)
    predict.add_argument(
        "--story", required=True, help="A story id, or a folder of frames and captions.txt."
    )
    predict.add_argument("--start", type=int, default=0, help="First context frame (0-based).")
    predict.add_argument("--sampler", default="greedy")
    export = commands.add_parser(
        "export", help="Export a trained workdir for serving (SavedModel or ONNX)."
    )
    export.add_argument("--workdir", required=True)
    export.add_argument("--format", default="tf_saved_model", choices=("tf_saved_model", "onnx"))
    export.add_argument("--output", help="Export folder; default <workdir>/export/<format>.")
    serve_check = commands.add_parser(
        "serve-check", help="Run an export on held-out stories; compare with the Keras model."
    )
    serve_check.add_argument("--export", required=True, help="A folder from kstory export.")
    serve_check.add_argument("--workdir", help="Its run; default two levels above --export.")
    serve_check.add_argument("--split", default="test", choices=("test", "validation", "train"))
    serve_check.add_argument("--windows", type=int, default=8, help="Held-out windows to run.")
    serve_check.add_argument("--atol", type=float, default=1e-5)
    serve_check.add_argument("--report", help="Also write the table, with provenance, here.")
    bench = commands.add_parser(
        "bench",
        help="Time the train step on synthetic inputs of a named shape; with --epoch, "
        "whole epochs from images vs from the feature cache.",
    )
    bench.add_argument(
        "--shape",
        help="tiny, cpu or paper (see kstory.bench); default tiny, and cpu with --epoch.",
    )
    bench.add_argument(
        "--epoch",
        action="store_true",
        help="Time training epochs on synthetic StoryReasoning-like stories, naive vs "
        "deduplicated feature cache (needs TensorFlow for tf.data).",
    )
    bench.add_argument(
        "--stories",
        type=int,
        default=3552,
        help="With --epoch: synthetic stories (3552 is StoryReasoning's train split).",
    )
    bench.add_argument("--epochs", type=int, default=2, help="With --epoch: epochs per run.")
    bench.add_argument("--report", help="Also write the result, with provenance, here.")
    bench.add_argument("--steps", type=int, default=20, help="Timed steps, after the warm-up.")
    bench.add_argument("--warmup-steps", type=int, default=3, help="Untimed compile steps.")
    bench.add_argument("--batch-size", type=int, help="Override the shape's batch size.")
    bench.add_argument("--dtype-policy", help="Override the shape's precision.")
    bench.add_argument("--jit-compile", default="auto", choices=("auto", "true", "false"))
    bench.add_argument(
        "--features",
        action="store_true",
        help="Time the step from cached image features (a frozen encoder) instead of images.",
    )
    bench.add_argument(
        "--data-parallel",
        action="store_true",
        help="Split the batch over all devices (JAX: keras.distribution; TF: MirroredStrategy).",
    )
    bench.add_argument("--json", action="store_true", help="Print one JSON line only.")
    return parser


def _load_config(args):
    from kstory.config import apply_overrides
    from kstory.config import load_config

    return apply_overrides(load_config(args.config, smoke=args.smoke), args.set)


def _data(args):
    import keras

    from kstory.config import config_to_dict
    from kstory.data import summary as data_summary
    from kstory.provenance import provenance

    config = _load_config(args)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "data_config.json"), "w") as file:
        json.dump(config_to_dict(config), file, indent=2)
    print(f"keras backend: {keras.config.backend()}")
    summary = data_summary.summarize_data(config.data, os.path.join(args.workdir, "data"))
    with open(os.path.join(args.workdir, "data_summary.json"), "w") as file:
        json.dump(summary, file, indent=2)
    print(data_summary.format_summary(summary))
    if args.report:
        with open(args.report, "w") as file:
            file.write(data_summary.format_report(summary, provenance(args.config)))


def _train(args):
    from kstory.data.skip_log import format_skip_report
    from kstory.provenance import provenance
    from kstory.training.train import train
    from kstory.workdir import SKIPPED_FILE

    if args.report and not args.evaluate:
        raise ValueError("--report writes the evaluation's metrics; add --evaluate.")
    config = _load_config(args)
    model = train(
        config,
        args.workdir,
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    with open(os.path.join(args.workdir, "train_provenance.json"), "w") as file:
        json.dump(provenance(args.config), file, indent=2)
    with open(os.path.join(args.workdir, SKIPPED_FILE)) as file:
        print(format_skip_report(json.load(file)))
    print(f"Trained; model and history in {args.workdir}")
    if args.evaluate:
        _score_and_report(args.workdir, "test", "greedy", args.storyboards, args.report, model)


def _evaluate(args):
    _score_and_report(args.workdir, args.split, args.sampler, args.storyboards, args.report)


def _score_and_report(workdir, split, sampler, storyboards, report, model=None):
    """`kstory evaluate`: scores, prints, and writes the report with provenance."""
    from kstory.evaluation.evaluate import evaluate
    from kstory.evaluation.evaluate import format_metrics
    from kstory.provenance import provenance
    from kstory.provenance import provenance_markdown

    metrics = evaluate(workdir, split, sampler, model=model, storyboards=storyboards)
    print(format_metrics(metrics))
    print("storyboards:", ", ".join(metrics.get("storyboards", [])))
    if report:
        trained_by = os.path.join(workdir, "train_provenance.json")
        with open(report, "w") as file:
            file.write("# Metrics\n\nProduced by:\n\n")
            file.write(provenance_markdown(provenance(os.path.join(workdir, "config.json"))))
            if os.path.exists(trained_by):
                with open(trained_by) as trained:
                    file.write("\n\nThe model was trained by:\n\n")
                    file.write(provenance_markdown(json.load(trained)))
            file.write("\n\n" + format_metrics(metrics))


def _ablate(args):
    from kstory.evaluation.ablation import format_ablation
    from kstory.evaluation.ablation import run_ablation
    from kstory.provenance import provenance
    from kstory.provenance import provenance_markdown

    config = _load_config(args)
    variants = args.variants and [name.strip() for name in args.variants.split(",")]
    results = run_ablation(config, args.workdir, variants=variants)
    table = format_ablation(results)
    print(table)
    if args.report:
        with open(args.report, "w") as file:
            file.write("# Ablation: what each loss term and each modality buy\n\nProduced by:\n\n")
            file.write(provenance_markdown(provenance(args.config)) + "\n\n" + table)


def _seeds(args):
    from kstory.evaluation.seed_spread import format_seed_spread
    from kstory.evaluation.seed_spread import run_seeds
    from kstory.provenance import provenance
    from kstory.provenance import provenance_markdown

    config = _load_config(args)
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers; got {args.seeds!r}.")
    table = format_seed_spread(run_seeds(config, args.workdir, seeds))
    print(table)
    if args.report:
        with open(args.report, "w") as file:
            file.write("# Headline scores over seeds\n\nProduced by:\n\n")
            file.write(provenance_markdown(provenance(args.config)) + "\n\n" + table)


def _predict(args):
    from kstory.evaluation.predict import predict

    result = predict(args.workdir, args.story, args.start, args.sampler)
    print(f"next caption: {result['caption']}")
    print(f"next image: {result['image_path']}")
    print(f"storyboard: {result['storyboard_path']}")


def _export(args):
    from kstory.export.workdir_export import export_workdir

    path = export_workdir(args.workdir, args.format, args.output)
    print(f"Exported {args.format} to {path}")


def _serve_check(args):
    from kstory.export.serve_check import format_serve_check
    from kstory.export.serve_check import serve_check
    from kstory.provenance import provenance
    from kstory.provenance import provenance_markdown

    report = serve_check(args.export, args.workdir, args.split, args.windows, args.atol)
    print(format_serve_check(report))
    if args.report:
        with open(args.report, "w") as file:
            file.write("# Export check\n\nProduced by:\n\n")
            config = os.path.join(report["workdir"], "config.json")
            file.write(provenance_markdown(provenance(config)))
            file.write("\n\n" + format_serve_check(report) + "\n")
    return 0 if report["ok"] else 1


def _bench(args):
    if args.epoch:
        # Imported here: the epoch benchmark needs tf.data; the step one does not.
        from kstory.bench.epoch_bench import run_epoch_bench

        result = run_epoch_bench(args.shape or "cpu", args.stories, args.epochs)
    else:
        from kstory.bench.train_step_bench import run_train_step_bench

        result = run_train_step_bench(
            args.shape or "tiny",
            steps=args.steps,
            warmup_steps=args.warmup_steps,
            batch_size=args.batch_size,
            dtype_policy=args.dtype_policy,
            jit_compile={"auto": "auto", "true": True, "false": False}[args.jit_compile],
            from_features=args.features,
            data_parallel=args.data_parallel,
        )
    if not args.json:
        for name, value in result.items():
            print(f"{name:>25}: {value}")
    print(json.dumps(result))
    if args.report:
        from kstory.provenance import provenance
        from kstory.provenance import provenance_markdown

        title = "Epoch time, naive vs feature cache" if args.epoch else "Train-step speed"
        rows = "\n".join(f"| {name} | {value} |" for name, value in result.items())
        with open(args.report, "w") as file:
            file.write(f"# {title}\n\nProduced by:\n\n{provenance_markdown(provenance())}\n\n")
            file.write(f"| measure | value |\n|---|---|\n{rows}\n\n")
            file.write(f"Raw result:\n\n```\n{json.dumps(result)}\n```\n")


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


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        _select_backend(args.backend, argv)
    except ValueError as error:
        print(f"kstory: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        commands = {
            "data": _data,
            "train": _train,
            "evaluate": _evaluate,
            "ablate": _ablate,
            "seeds": _seeds,
            "predict": _predict,
            "export": _export,
            "serve-check": _serve_check,
            "bench": _bench,
        }
        code = commands[args.command](args) or 0
    except ValueError as error:
        print(f"kstory {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"kstory {args.command}: failed: {_one_line(error)}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
