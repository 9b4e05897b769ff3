import numpy as np
from PIL import Image

from kstory.evaluation.storyboard import draw_storyboard


def test_storyboard_png_has_a_panel_per_frame(tmp_path):
    frames = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(4)]
    path = tmp_path / "board.png"
    draw_storyboard(
        frames,
        [f"caption {i}" for i in range(4)],
        np.ones((8, 8, 3)) * 0.5,
        "predicted",
        np.zeros((8, 8, 3)),
        "true",
        path=str(path),
        title="story 1",
    )
    board = Image.open(path)
    assert board.width == 6 * 170 + 10
    without_truth = draw_storyboard(frames, ["c"] * 4, np.zeros((8, 8, 3)), "p")
    assert without_truth.width == 5 * 170 + 10
