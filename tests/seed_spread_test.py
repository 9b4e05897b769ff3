import numpy as np
import pytest

from kstory.evaluation.seed_spread import format_seed_spread
from kstory.evaluation.seed_spread import headline_scores
from kstory.evaluation.seed_spread import run_seeds


def _metrics(bleu, mse, caption_drop):
    scores = {"BLEU-4": bleu, "METEOR": bleu / 2, "CIDEr": 5 * bleu}
    image = {"MSE": mse, "SSIM": 0.7}
    retrieval = {"image_to_text_R@1": 0.03, "text_to_image_R@1": 0.04}
    return {
        "split": "test",
        "windows": 10,
        "text": {"model": scores, "copy last caption": scores, "nearest training context": scores},
        "image": {"model": image, "copy last frame": image, "mean training image": image},
        "retrieval": {"model": retrieval, "chance": retrieval},
        "input_reliance": {
            "verdicts": [
                {"output": "caption", "shuffled": "images", "relative_drop": caption_drop},
                {"output": "next image", "shuffled": "captions", "relative_drop": 0.2},
            ]
        },
    }


def test_mean_and_sample_std_over_seeds():
    results = {
        0: _metrics(0.6, 0.07, 0.1),
        1: _metrics(0.7, 0.05, 0.3),
        2: _metrics(0.8, 0.06, 0.2),
    }
    assert headline_scores(results[1])["caption drop, images shuffled"] == 0.3
    table = format_seed_spread(results)
    std = np.std([0.6, 0.7, 0.8], ddof=1)
    assert f"| BLEU-4 | 0.7000 ± {std:.4f} | 0.6000 | 0.7000 | 0.8000 |" in table
    assert "| MSE | 0.0600 ± 0.0100 |" in table
    assert "| caption drop, images shuffled | 0.2000 ± 0.1000 |" in table


def test_one_seed_is_no_spread(tmp_path, repo_root):
    from kstory.config import load_config

    config = load_config(f"{repo_root}/configs/tiny.py", smoke=True)
    with pytest.raises(ValueError, match="at least two distinct seeds"):
        run_seeds(config, str(tmp_path), seeds=(3, 3))


def test_each_seed_s_claims_are_checked():
    from claims_test import _metrics as claimed_metrics

    results = {0: claimed_metrics(seed=0), 1: claimed_metrics(captions="blanked", seed=1)}
    row = next(line for line in format_seed_spread(results).splitlines() if "claims" in line)
    assert row == (
        "| claims that hold (`kstory check-claims`) | not on seed 1 | 7 of 7 | "
        "6 of 7 (next frame reads fails) |"
    )
    results[1] = claimed_metrics(seed=1)
    assert "| all, on every seed | 7 of 7 | 7 of 7 |" in format_seed_spread(results)
