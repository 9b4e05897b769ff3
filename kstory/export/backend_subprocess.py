"""Runs a kstory module under another Keras backend, in a fresh process."""

import os
import subprocess
import sys


def run_under_backend(backend, module, arguments, timeout=1800):
    """Runs `python -m module *arguments` with `KERAS_BACKEND=backend`.

    The backend is fixed when Keras is imported, so work that only one
    backend can do (SavedModel export under TensorFlow, ONNX export under
    PyTorch) runs in a child process.

    Raises:
        RuntimeError: the child failed; the message ends with its output.
    """
    environment = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(
            f"`python -m {module}` under KERAS_BACKEND={backend} failed "
            f"(exit {result.returncode}):\n{output}"
        )
    return result.stdout
