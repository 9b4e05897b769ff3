import os

import pytest

from kstory.export import workdir_export


def _previous_export(workdir):
    """A workdir with a model file and a (stand-in) earlier export."""
    (workdir / "model.keras").write_bytes(b"stand-in")
    previous = workdir / "export" / "tf_saved_model"
    previous.mkdir(parents=True)
    (previous / "serving.json").write_text('{"export": "previous"}')
    return previous


def test_a_failed_export_leaves_the_previous_one(tmp_path, monkeypatch):
    previous = _previous_export(tmp_path)

    def fails_halfway(model_path, path):
        os.makedirs(path)
        open(os.path.join(path, "serving.json"), "w").close()  # Half written.
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(workdir_export, "export_saved_model_file", fails_halfway)
    with pytest.raises(OSError, match="No space left"):
        workdir_export.export_workdir(str(tmp_path))
    assert (previous / "serving.json").read_text() == '{"export": "previous"}'
    assert sorted(os.listdir(tmp_path / "export")) == ["tf_saved_model"]


def test_a_complete_export_replaces_the_previous_one(tmp_path, monkeypatch):
    previous = _previous_export(tmp_path)

    def writes(model_path, path):
        os.makedirs(path)
        with open(os.path.join(path, "serving.json"), "w") as file:
            file.write('{"export": "new"}')
        return path

    monkeypatch.setattr(workdir_export, "export_saved_model_file", writes)
    assert workdir_export.export_workdir(str(tmp_path)) == str(previous)
    assert (previous / "serving.json").read_text() == '{"export": "new"}'
    assert sorted(os.listdir(tmp_path / "export")) == ["tf_saved_model"]


def test_an_output_that_is_not_an_export_is_refused_before_exporting(tmp_path, monkeypatch):
    (tmp_path / "model.keras").write_bytes(b"stand-in")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"jpeg")
    exports = []
    monkeypatch.setattr(workdir_export, "export_saved_model_file", exports.append)
    with pytest.raises(ValueError, match="is not a kstory export"):
        workdir_export.export_workdir(str(tmp_path), output=str(other))
    assert exports == [] and os.listdir(other) == ["holiday.jpg"]
