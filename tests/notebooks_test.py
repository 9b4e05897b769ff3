import glob
import os

import nbformat
import pytest

NOTEBOOK_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks"
)
NOTEBOOKS = sorted(os.path.basename(path) for path in glob.glob(f"{NOTEBOOK_DIR}/*.ipynb"))

# What each notebook must print when it works, beyond running without error.
EXPECTED_OUTPUT = {
    "00_model_fit.ipynb": ["'val_loss'", "predicted:", "image/png"],
    "01_quickstart.ipynb": ["| copy last caption |", "| copy last frame |", "image/png"],
    "02_backends.ipynb": ["next caption:", "largest pixel difference"],
    "03_real_data.ipynb": ["stories;", "frame 1:", "cosine, paraphrase:", "windows"],
    "04_export_and_serve.ipynb": ["predicted:", "serve-check: passed", "ONNX vs SavedModel"],
}


def _outputs_text(notebook):
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            for mime, data in output.get("data", {}).items():
                texts.append(mime)
                texts.append(data if isinstance(data, str) else "")
    return "\n".join(texts)


def test_every_notebook_is_listed():
    assert NOTEBOOKS == sorted(EXPECTED_OUTPUT)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} has outputs"


# Each notebook trains a smoke run; they run once, in the torch pass.
@pytest.mark.single_backend
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("KSTORY_NOTEBOOK_RUNS", str(tmp_path))
    monkeypatch.delenv("KSTORY_NOTEBOOK_FULL", raising=False)
    notebook = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": NOTEBOOK_DIR}},
    )
    client.execute()
    text = _outputs_text(notebook)
    for expected in EXPECTED_OUTPUT[name]:
        assert expected in text, f"{name}: no {expected!r} in its outputs"
    if name == "02_backends.ipynb":
        difference = int(text.split("largest pixel difference")[1].split(":")[1].split("of")[0])
        assert difference <= 1
