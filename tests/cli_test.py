import json
import os
import subprocess
import sys

from kstory.cli import main


def test_data_command_builds_and_summarises_the_embedded_dataset(tmp_path, repo_root, capsys):
    workdir = tmp_path / "run"
    report = tmp_path / "report.md"
    code = main(["data", "--config", f"{repo_root}/configs/tiny.py", "--workdir", str(workdir),
                 "--smoke", "--set", "data.batch_size=2", "--report", str(report)])
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


def test_bad_override_fails_with_one_clear_line(tmp_path, repo_root, capsys):
    code = main(["data", "--config", f"{repo_root}/configs/tiny.py", "--workdir", str(tmp_path),
                 "--set", "data.bach_size=2"])
    assert code == 2
    error = capsys.readouterr().err
    assert "Unknown config key 'data.bach_size'" in error


def test_backend_flag_is_set_before_keras_loads(tmp_path, repo_root):
    backend = "jax" if os.environ.get("KERAS_BACKEND") != "jax" else "tensorflow"
    result = subprocess.run(
        [sys.executable, "-m", "kstory.cli", "--backend", backend, "data", "--config",
         f"{repo_root}/configs/tiny.py", "--workdir", str(tmp_path), "--smoke"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"keras backend: {backend}" in result.stdout
