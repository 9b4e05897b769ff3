import json
import os
import subprocess
import sys

import bad_data
import pytest

from kstory.cli import main
from kstory.data.parquet_shards import write_shards


def test_data_command_builds_and_summarises_the_embedded_dataset(tmp_path, repo_root, capsys):
    workdir = tmp_path / "run"
    report = tmp_path / "report.md"
    code = main(
        [
            "data",
            "--config",
            f"{repo_root}/configs/tiny.py",
            "--workdir",
            str(workdir),
            "--smoke",
            "--set",
            "data.batch_size=2",
            "--report",
            str(report),
        ]
    )
    assert code == 0
    output = capsys.readouterr().out
    assert "train" in output and "windows" in output and "next:" in output
    summary = json.loads((workdir / "data_summary.json").read_text())
    assert summary["batch"]["images"] == "(2, 4, 32, 32, 3) uint8"
    assert sum(split["stories"] for split in summary["splits"].values()) == 24
    assert summary["splits"]["train"]["windows"] > 0
    text = report.read_text()
    assert "- backend: `" in text and "- machine: `" in text and "configs/tiny.py" in text
    config = json.loads((workdir / "data_config.json").read_text())
    assert config["data"]["batch_size"] == 2
    assert os.path.exists(workdir / "data" / "embedded" / "data" / "train-00000-of-00001.parquet")


# The flag picks the backend of a new process, whichever backend the suite runs.
@pytest.mark.single_backend
def test_backend_flag_is_set_before_keras_loads(tmp_path, repo_root):
    backend = "jax" if os.environ.get("KERAS_BACKEND") != "jax" else "tensorflow"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kstory.cli",
            "--backend",
            backend,
            "data",
            "--config",
            f"{repo_root}/configs/tiny.py",
            "--workdir",
            str(tmp_path),
            "--smoke",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"keras backend: {backend}" in result.stdout


@pytest.mark.single_backend
def test_tensorflow_native_log_is_hidden_unless_verbose():
    environment = dict(os.environ, KERAS_BACKEND="tensorflow")
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)

    def stderr(*flags):
        command = [sys.executable, "-m", "kstory.cli", *flags, "--help"]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=300, env=environment
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stderr

    # TensorFlow does write a native log on this machine...
    assert "absl::InitializeLog" in stderr("--verbose")
    # ...which the command line hides.
    quiet = stderr()
    assert "absl::InitializeLog" not in quiet
    assert not [line for line in quiet.splitlines() if line[:5] in ("I0000", "W0000", "E0000")]


_CONFIG_FILE = """
from kstory.config import Config
from kstory.data.data_config import DataConfig
from kstory.models.model_config import ModelConfig


def get_config(smoke=False):
    return Config({section})
"""


@pytest.fixture
def error_cases(tmp_path, repo_root):
    """Each bad command line, and what its one line of error must name."""
    from kstory.config import apply_overrides
    from kstory.config import load_config
    from kstory.training.train import check_workdir_config

    def config_file(name, section):
        path = tmp_path / f"{name}.py"
        path.write_text(_CONFIG_FILE.format(section=section))
        return str(path)

    tiny = ["--config", f"{repo_root}/configs/tiny.py", "--smoke"]
    trained = str(tmp_path / "trained")
    check_workdir_config(load_config(f"{repo_root}/configs/tiny.py", smoke=True), trained)
    newer = tmp_path / "newer"
    check_workdir_config(apply_overrides(load_config(tiny[1]), []), str(newer))
    values = json.loads((newer / "config.json").read_text())
    values["data"]["colour"] = "red"
    (newer / "config.json").write_text(json.dumps(values))
    only_broken = str(tmp_path / "only_broken")
    train_rows, _, _ = bad_data.story_reasoning_rows()
    broken = [row for row in train_rows if row["story_id"] in ("short", "zero", "tiff")]
    write_shards(broken, only_broken, "train")
    write_shards(broken, only_broken, "test")
    return {
        "unknown --set key": (["train", *tiny, "--set", "data.bach_size=2"], "data.bach_size"),
        "wrong --set type": (
            ["train", *tiny, "--set", "data.batch_size=abc"],
            "data.batch_size takes an int",
        ),
        "unknown key in a config file": (
            ["train", "--config", config_file("typo", "data=DataConfig(bach_size=2)")],
            "unexpected keyword argument 'bach_size'",
        ),
        "string for an int in a config file": (
            ["train", "--config", config_file("text", 'data=DataConfig(batch_size="16")')],
            "data.batch_size must be an int; got '16' (str)",
        ),
        "float for an int in a config file": (
            ["train", "--config", config_file("float", "model=ModelConfig(embedding_dim=12.5)")],
            "model.embedding_dim must be an int; got 12.5",
        ),
        "missing config file": (["train", "--config", str(tmp_path / "nope.py")], "No config file"),
        "missing StoryReasoning folder": (
            [
                "train",
                *tiny,
                "--set",
                "data.source=story_reasoning",
                "--set",
                f"data.path={tmp_path}/nope",
            ],
            "data.path",
        ),
        "missing VIST photo folder": (
            [
                "train",
                *tiny,
                "--set",
                "data.source=vist",
                "--set",
                f"data.path={tmp_path}",
                "--set",
                f"data.image_dir={tmp_path}/nope",
            ],
            "data.image_dir",
        ),
        "missing tokenizer folder": (
            ["train", *tiny, "--set", f"data.tokenizer={tmp_path}/nope"],
            "data.tokenizer",
        ),
        "missing text encoder folder": (
            ["train", *tiny, "--set", f"model.text_encoder={tmp_path}/nope"],
            "model.text_encoder",
        ),
        "missing image weights file": (
            ["train", *tiny, "--set", f"model.image_weights={tmp_path}/nope.weights.h5"],
            "model.image_weights",
        ),
        "workdir of another architecture": (
            ["train", *tiny, "--set", "model.temporal_model=transformer", "--workdir", trained],
            "differs in model.temporal_model",
        ),
        "workdir from another version": (["evaluate", "--workdir", str(newer)], "data.colour"),
        "--report without --evaluate": (
            ["train", *tiny, "--report", str(tmp_path / "metrics.md")],
            "add --evaluate",
        ),
        "no usable story": (
            [
                "train",
                *tiny,
                "--set",
                "data.source=story_reasoning",
                "--set",
                f"data.path={only_broken}",
            ],
            "No train stories are left (6 skipped",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown --set key",
        "wrong --set type",
        "unknown key in a config file",
        "string for an int in a config file",
        "float for an int in a config file",
        "missing config file",
        "missing StoryReasoning folder",
        "missing VIST photo folder",
        "missing tokenizer folder",
        "missing text encoder folder",
        "missing image weights file",
        "workdir of another architecture",
        "workdir from another version",
        "--report without --evaluate",
        "no usable story",
    ],
)
def test_config_and_cli_errors_are_one_clear_line(case, error_cases, tmp_path, capsys):
    argv, names = error_cases[case]
    if "--workdir" not in argv:
        argv = [*argv, "--workdir", str(tmp_path / "run")]
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"kstory {argv[0]}: error: ") and names in lines[0], lines[0]
