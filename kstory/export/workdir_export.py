"""`kstory export`: a trained workdir's model as a servable artefact."""

import os
import shutil

from kstory.export.onnx_export import export_onnx_file
from kstory.export.saved_model_export import SERVING_DIR
from kstory.export.saved_model_export import export_saved_model_file
from kstory.export.serving_files import SERVING_FILE
from kstory.workdir import EXPORT_DIR
from kstory.workdir import MODEL_FILE

EXPORT_FORMATS = ("tf_saved_model", "onnx")


def default_export_dir(workdir, export_format):
    return os.path.join(workdir, EXPORT_DIR, export_format)


def _check_replaceable(path):
    """Refuses an existing `path` that is neither empty nor an earlier kstory export."""
    if not os.path.exists(path):
        return
    is_empty_folder = os.path.isdir(path) and not os.listdir(path)
    is_export = any(
        os.path.isfile(os.path.join(path, folder, SERVING_FILE)) for folder in ("", SERVING_DIR)
    )
    if not (is_empty_folder or is_export):
        raise ValueError(f"{path} exists and is not a kstory export; choose another --output.")


def export_workdir(workdir, export_format="tf_saved_model", output=None):
    """Exports a trained workdir's `model.keras`, whatever backend trained it.

    Args:
        workdir: str. A folder written by `kstory train`.
        export_format: str. `"tf_saved_model"` (see `export_saved_model`) or
            `"onnx"` (see `export_onnx`).
        output: str. The export folder; defaults to
            `<workdir>/export/<export_format>`. An earlier export there is
            replaced, once the new one is complete.

    Returns:
        str, the export folder.
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"--format must be one of {EXPORT_FORMATS}; got {export_format!r}.")
    model_path = os.path.join(workdir, MODEL_FILE)
    if not os.path.exists(model_path):
        raise ValueError(f"{workdir} has no {MODEL_FILE}; train it first (kstory train).")
    output = output or default_export_dir(workdir, export_format)
    _check_replaceable(output)  # Before the export, which takes minutes.
    # Written beside, then renamed over the previous export: a reader never
    # finds half an export, and a failed export leaves the previous one.
    incoming = f"{output.rstrip(os.sep)}.incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        if export_format == "tf_saved_model":
            export_saved_model_file(model_path, incoming)
        else:
            export_onnx_file(model_path, incoming)
        shutil.rmtree(output, ignore_errors=True)
        os.replace(incoming, output)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return output
