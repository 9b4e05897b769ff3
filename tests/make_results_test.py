"""`make results`: every published file has a step that makes it."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.single_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import make_results  # noqa: E402

# Not made by a step: the index of the folder, the manifest itself, and the
# GPU table (benchmarks/gpu_bench.py, on a lent GPU machine).
NOT_A_STEP_S = {"README.md", "manifest.json", "bench_gpu.md"}


def test_every_results_file_is_made_by_one_step():
    made = [path for _, outputs, _ in make_results.STEPS for path in outputs]
    assert len(made) == len(set(made)), "two steps write the same file"
    published = set(os.listdir(os.path.join(REPO, "results"))) - NOT_A_STEP_S
    assert published <= set(made), f"no step makes {sorted(published - set(made))}"


def test_the_manifest_names_real_files_and_their_commands():
    with open(make_results.MANIFEST) as file:
        manifest = json.load(file)
    commands = {path: step for step, outputs, _ in make_results.STEPS for path in outputs}
    for path, entry in manifest["files"].items():
        assert os.path.exists(os.path.join(REPO, "results", path)), path
        assert entry["step"] == commands[path], path
        assert entry["kstory_commit"] and entry["duration_s"] > 0, path


def test_an_unknown_step_is_refused_by_name():
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "make_results.py"), "--only", "dmeo"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "unknown steps ['dmeo']; known: demo, seeds-tensorflow" in done.stderr
