import pytest
from PIL import Image

from kstory.cli import main


@pytest.mark.parametrize(
    "content, problem",
    [(b"<html>not found</html>", "cannot identify image file"), (b"", "zero-byte image")],
)
def test_predict_names_a_frame_that_is_not_an_image(content, problem, repo_root, tmp_path, capsys):
    from kstory.config import load_config
    from kstory.training.train import check_workdir_config

    workdir = str(tmp_path / "run")
    check_workdir_config(load_config(f"{repo_root}/configs/tiny.py", smoke=True), workdir)
    folder = tmp_path / "story"
    folder.mkdir()
    for index in range(4):
        Image.new("RGB", (40, 30), (60 * index, 80, 120)).save(folder / f"frame_{index}.png")
    (folder / "frame_2.png").write_bytes(content)  # A failed download, saved as a frame.
    (folder / "captions.txt").write_text("\n".join(f"Caption {i}." for i in range(4)))
    capsys.readouterr()
    assert main(["predict", "--workdir", workdir, "--story", str(folder)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{folder / 'frame_2.png'} (frame 3 of {folder}): " in lines[0]
    assert problem in lines[0]
