"""Runs `kstory bench` in a fresh process (a backend or device count per run)."""

import json
import os
import subprocess
import sys


def bench_in_subprocess(arguments, env, label):
    """`kstory bench --json *arguments` with extra `env`; returns its result dict.

    Raises `SystemExit` naming `label` (e.g. "under jax") when the run fails.
    """
    result = subprocess.run(
        [sys.executable, "-m", "kstory.cli", "bench", "--json", *arguments],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"kstory bench {label} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
