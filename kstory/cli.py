"""The `kstory` command line: a thin layer over library functions."""

import argparse
import json
import logging
import os
import sys


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
    data.add_argument("--config", required=True, help="A config file, e.g. configs/tiny.py.")
    data.add_argument("--workdir", required=True, help="The run's folder.")
    data.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="Override a config value, e.g. data.batch_size=8.")
    data.add_argument("--smoke", action="store_true", help="The config's smoke variant.")
    data.add_argument("--report", help="Also write the summary, with provenance, to this file.")
    return parser


def _data(args):
    import keras

    from kstory.config import apply_overrides
    from kstory.config import config_to_dict
    from kstory.config import load_config
    from kstory.data import summary as data_summary
    from kstory.provenance import provenance

    config = apply_overrides(load_config(args.config, smoke=args.smoke), args.set)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "config.json"), "w") as file:
        json.dump(config_to_dict(config), file, indent=2)
    print(f"keras backend: {keras.config.backend()}")
    summary = data_summary.summarize_data(config.data, os.path.join(args.workdir, "data"))
    with open(os.path.join(args.workdir, "data_summary.json"), "w") as file:
        json.dump(summary, file, indent=2)
    print(data_summary.format_summary(summary))
    if args.report:
        with open(args.report, "w") as file:
            file.write(data_summary.format_report(summary, provenance(args.config)))


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


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        _select_backend(args.backend, argv)
    except ValueError as error:
        print(f"kstory: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        {"data": _data}[args.command](args)
    except ValueError as error:
        print(f"kstory {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
