import os
import shutil

import keras
import numpy as np
import pytest

from kstory.cli import main
from kstory.export.serve_check import held_out_windows
from kstory.export.serve_check import serve_check

# Training the workdir (`trained_workdir`, tests/conftest.py) is the slow part
# and the export route per backend is covered by saved_model_export_test.py,
# so these run once, in the torch pass (where `kstory export` takes the
# subprocess route).
pytestmark = [pytest.mark.single_backend, pytest.mark.xdist_group("serve_check")]


def test_export_then_serve_check_passes_from_the_command_line(trained_workdir, capsys):
    assert main(["export", "--workdir", trained_workdir]) == 0
    export_dir = os.path.join(trained_workdir, "export", "tf_saved_model")
    assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
    capsys.readouterr()
    assert main(["serve-check", "--export", export_dir, "--windows", "4"]) == 0
    output = capsys.readouterr().out
    assert "serve-check: passed" in output
    assert "| serve_tensors/next_token_ids | 4/4 sequences equal | equal | yes |" in output
    assert "| serving_default/caption | 4/4 sequences equal | equal | yes |" in output


def test_serve_check_fails_when_the_export_is_not_the_model(trained_workdir, tmp_path, capsys):
    export_dir = os.path.join(trained_workdir, "export", "tf_saved_model")
    if not os.path.exists(export_dir):
        main(["export", "--workdir", trained_workdir])
    # The same run, but with the image path changed after export.
    changed = str(tmp_path / "changed")
    shutil.copytree(trained_workdir, changed, ignore=shutil.ignore_patterns("export"))
    model = keras.saving.load_model(os.path.join(changed, "model.keras"))
    for variable in (
        model.backbone.image_projection.kernel,
        model.backbone.image_decoder.to_rgb.bias,
    ):
        variable.assign(keras.ops.convert_to_numpy(variable) + 0.05)
    model.save(os.path.join(changed, "model.keras"))

    report = serve_check(export_dir, workdir=changed, num_windows=4)
    assert not report["ok"]
    failed = {check["output"] for check in report["checks"] if not check["ok"]}
    assert {"embed_images", "serve_tensors/next_image", "serving_default/next_image"} <= failed
    assert "embed_texts" not in failed
    capsys.readouterr()
    assert main(["serve-check", "--export", export_dir, "--workdir", changed]) == 1
    assert "serve-check: FAILED" in capsys.readouterr().out


def test_held_out_windows_are_raw_frames_and_captions_of_the_test_split(trained_workdir):
    frames, captions = held_out_windows(trained_workdir, "test", num_windows=3)
    assert len(frames) == len(captions) == 3
    assert all(len(f) == 4 and isinstance(f[0], bytes) for f in frames)
    assert all(len(c) == 4 and isinstance(c[0], str) for c in captions)
    assert np.unique([c[0] for c in captions]).size >= 1


def test_export_errors_name_the_problem(tmp_path, capsys):
    assert main(["export", "--workdir", str(tmp_path)]) == 2
    assert "has no model.keras" in capsys.readouterr().err
    assert main(["serve-check", "--export", str(tmp_path), "--workdir", str(tmp_path)]) == 2
    assert "is not a kstory export" in capsys.readouterr().err
    (tmp_path / "model.keras").write_text("")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    code = main(["export", "--workdir", str(tmp_path), "--output", str(tmp_path / "notes")])
    assert code == 2 and "is not a kstory export" in capsys.readouterr().err
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
