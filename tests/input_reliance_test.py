import numpy as np
import pytest

from kstory.evaluation.input_reliance import format_input_reliance
from kstory.evaluation.input_reliance import input_reliance
from kstory.evaluation.input_reliance import relative_change
from kstory.evaluation.input_reliance import story_state_change


def _run(bleu, meteor, mse, state):
    return {
        "text": {"BLEU-4": bleu, "METEOR": meteor, "CIDEr": 1.0},
        "image": {"MSE": mse, "SSIM": 0.5},
        "story_state": state,
    }


def test_relative_change_is_worse_positive_for_both_directions():
    assert relative_change(0.8, 0.6, higher_is_better=True) == pytest.approx(0.25)
    assert relative_change(0.01, 0.02, higher_is_better=False) == pytest.approx(1.0)
    assert relative_change(0.8, 0.88, higher_is_better=True) == pytest.approx(-0.1)


def test_story_state_change_is_relative_l2():
    state = np.ones((3, 4))
    assert story_state_change(state, state) == 0
    assert story_state_change(state, 1.5 * state) == pytest.approx(0.5)


def test_verdicts_say_what_each_output_uses():
    state = np.random.default_rng(0).normal(size=(5, 8))
    section = input_reliance(
        {
            "as is": _run(0.80, 0.50, 0.010, state),
            # The caption falls with the images shuffled (METEOR by 20%, BLEU-4 by 5%).
            "images shuffled": _run(0.76, 0.40, 0.0100, state + 1),
            # The image worsens a little with the captions shuffled; the caption not.
            "captions shuffled": _run(0.80, 0.50, 0.0105, state),
        }
    )
    verdicts = {(v["output"], v["shuffled"]): v for v in section["verdicts"]}
    caption_images = verdicts[("caption", "images")]
    assert caption_images["score"] == "METEOR"  # the larger of the two drops
    assert caption_images["relative_drop"] == pytest.approx(0.2)
    assert caption_images["verdict"].startswith(
        "the caption relies on the images: METEOR falls from 0.5 to 0.4 (+20.0% worse)"
    )
    assert verdicts[("next image", "images")]["verdict"].startswith("the next image ignores")
    assert verdicts[("next image", "captions")]["verdict"].startswith(
        "the next image uses the captions a little: MSE rises from 0.01 to 0.0105"
    )
    assert verdicts[("caption", "captions")]["verdict"].startswith(
        "the caption ignores the captions: BLEU-4 stays"
    )
    assert section["images shuffled"]["story_state_change"] > 0
    assert section["captions shuffled"]["story_state_change"] == 0
    table = format_input_reliance(section)
    assert "| images shuffled | 0.7600 | 0.4000 | 1.0000 | 0.0100 | 0.5000 |" in table
    assert table.count("\n- ") == 4
