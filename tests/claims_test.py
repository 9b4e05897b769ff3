"""The claims check: it passes a run that learnt, and fails each sabotaged one.

The metrics here are small and synthetic, but each sabotage goes through the
real scoring functions: blanked images give identical embeddings (so the
collapse check) and leave the caption unchanged when they are shuffled (so
`input_reliance`); a run without the contrastive term has image and text
embeddings that know nothing of each other (so `retrieval_recall`).
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from kstory import cli
from kstory.evaluation import claims
from kstory.evaluation.evaluate import mean_pairwise_cosine
from kstory.evaluation.input_reliance import input_reliance
from kstory.evaluation.retrieval import retrieval_chance
from kstory.evaluation.retrieval import retrieval_recall

pytestmark = pytest.mark.single_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES, DIM = 60, 8


def _caption_scores(bleu4, meteor, cider):
    return {"BLEU-4": bleu4, "METEOR": meteor, "CIDEr": cider}


def _image_scores(mse, ssim):
    return {"MSE": mse, "PSNR": 10 * np.log10(1 / mse), "SSIM": ssim}


def _entity_scores(f1):
    return {"all": {"precision": f1, "recall": f1, "F1": f1}}


def _retrieval(image_embeddings, text_embeddings):
    captions = [f"caption {i}" for i in range(len(image_embeddings))]
    return {
        "model": retrieval_recall(image_embeddings, text_embeddings, captions),
        "chance": retrieval_chance(captions),
        "image_embedding_mean_cosine": mean_pairwise_cosine(image_embeddings),
    }


def _metrics(images="learnt", captions="learnt", contrastive=True, seed=0):
    """Metrics of a run that learnt, or of one sabotaged.

    Args:
        images: `"learnt"` or `"blanked"` (every context frame the same).
        captions: `"learnt"` or `"blanked"` (every context caption empty).
        contrastive: bool. False: the image and text embeddings are trained
            apart, so they know nothing of each other.
    """
    rng = np.random.default_rng(seed)
    image_embeddings = rng.normal(size=(NUM_FRAMES, DIM))
    text_embeddings = image_embeddings + 0.1 * rng.normal(size=(NUM_FRAMES, DIM))
    if not contrastive:
        text_embeddings = rng.normal(size=(NUM_FRAMES, DIM))
    if images == "blanked":
        image_embeddings = np.tile(rng.normal(size=(1, DIM)), (NUM_FRAMES, 1))
    as_is_text, as_is_image = _caption_scores(0.72, 0.49, 5.3), _image_scores(0.026, 0.81)
    # What shuffling a modality does to a run: nothing if the modality carries
    # nothing (blanked), else what the tiny run shows.
    images_shuffled_text = as_is_text if images == "blanked" else _caption_scores(0.62, 0.44, 4.3)
    captions_shuffled_image = as_is_image if captions == "blanked" else _image_scores(0.13, 0.66)
    story_state = rng.normal(size=(10, 4))
    reliance = input_reliance(
        {
            "as is": {"text": as_is_text, "image": as_is_image, "story_state": story_state},
            "images shuffled": {
                "text": images_shuffled_text,
                "image": _image_scores(0.043, 0.64),
                "story_state": story_state + 1,
            },
            "captions shuffled": {
                "text": _caption_scores(0.26, 0.24, 0.61),
                "image": captions_shuffled_image,
                "story_state": story_state + 1,
            },
        }
    )
    return {
        "split": "test",
        "windows": 10,
        "text": {
            "model": as_is_text,
            "copy last caption": _caption_scores(0.56, 0.41, 2.9),
            "nearest training context": _caption_scores(0.31, 0.30, 1.1),
        },
        "image": {
            "model": as_is_image,
            "copy last frame": _image_scores(0.077, 0.76),
            "mean training image": _image_scores(0.070, 0.71),
        },
        "retrieval": _retrieval(image_embeddings, text_embeddings),
        "input_reliance": reliance,
        "grounding": {
            "model": {**_entity_scores(0.92), "new_entity_recall": 0.9},
            "last frame's entities": _entity_scores(0.80),
            "every context entity": _entity_scores(0.73),
        },
    }


def _failed(metrics):
    return claims.failed_claims(claims.check_claims(metrics))


def test_a_run_that_learnt_holds_every_claim():
    results = claims.check_claims(_metrics())
    assert claims.failed_claims(results) == []
    text = claims.format_claims(results)
    assert text.endswith(f"{len(claims.CLAIMS)} of {len(claims.CLAIMS)} claims hold.")
    assert "PASS  captions" in text and "FAIL" not in text


def test_blanked_images_fail_the_images_claims():
    # Identical frames: shuffling them changes no caption, and their
    # embeddings are one vector, which retrieves no caption better than chance.
    assert _failed(_metrics(images="blanked")) == ["caption looks", "retrieval", "no collapse"]


def test_blanked_captions_fail_the_captions_claim():
    assert _failed(_metrics(captions="blanked")) == ["next frame reads"]


def test_no_contrastive_term_fails_retrieval():
    metrics = _metrics(contrastive=False)
    assert _failed(metrics) == ["retrieval"]
    ratio = (
        metrics["retrieval"]["model"]["image_to_text_R@1"]
        / (metrics["retrieval"]["chance"]["image_to_text_R@1"])
    )
    assert ratio < claims.MIN_RETRIEVAL_OVER_CHANCE


@pytest.mark.parametrize(
    "section, row, score, value, claim",
    [
        ("text", "model", "CIDEr", 2.0, "captions"),  # below copy-last's 2.9 only
        ("text", "model", "METEOR", 0.41, "captions"),  # equal to a floor is not beating it
        ("image", "model", "MSE", 0.072, "next frame"),  # above the mean image's 0.070
        ("image", "model", "SSIM", 0.75, "next frame"),  # below copy-last's 0.76
    ],
)
def test_a_model_that_does_not_beat_one_floor_fails(section, row, score, value, claim):
    metrics = _metrics()
    metrics[section][row][score] = value
    assert _failed(metrics) == [claim]


def test_the_bars_are_the_readme_s():
    metrics = _metrics()
    reliance = metrics["input_reliance"]
    # BLEU-4 9.9% worse with the images shuffled: below the 10% bar.
    reliance["images shuffled"]["text"]["BLEU-4"] = 0.72 * (1 - 0.099)
    # Entity F1 equal to the last frame's.
    metrics["grounding"]["model"]["all"]["F1"] = 0.80
    metrics["retrieval"]["image_embedding_mean_cosine"] = 0.91
    assert _failed(metrics) == ["caption looks", "grounding", "no collapse"]
    reliance["images shuffled"]["text"]["BLEU-4"] = 0.72 * (1 - 0.101)
    metrics["grounding"]["model"]["all"]["F1"] = 0.81
    metrics["retrieval"]["image_embedding_mean_cosine"] = 0.9
    assert _failed(metrics) == []


def test_a_claim_whose_metrics_are_missing_fails_and_says_why():
    metrics = _metrics()
    del metrics["grounding"]
    results = claims.check_claims(metrics)
    assert claims.failed_claims(results) == ["grounding"]
    assert "not measured (no grounding in the metrics)" in claims.format_claims(results)


def test_every_claim_guards_a_readme_sentence():
    with open(os.path.join(REPO, "README.md")) as file:
        readme = " ".join(file.read().split())
    for claim in claims.CLAIMS:
        assert claim.sentence in readme, claim.name


def _workdir(tmp_path, metrics):
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / "metrics.json", "w") as file:
        json.dump(metrics, file)
    return str(tmp_path)


def test_check_claims_command_passes_a_good_run(tmp_path, capsys):
    assert cli.main(["check-claims", "--workdir", _workdir(tmp_path, _metrics())]) == 0
    out = capsys.readouterr().out
    assert "(test split, 10 windows)" in out
    for claim in claims.CLAIMS:
        assert f"PASS  {claim.name}: {claim.sentence}" in out
    assert re.search(r"BLEU-4: model vs copy last caption: 0\.72 > 0\.56", out)


def test_check_claims_command_exits_1_naming_the_failures(tmp_path):
    # The real command a user (and .ci/run) types, in its own process.
    workdir = _workdir(tmp_path, _metrics(images="blanked", contrastive=False))
    done = subprocess.run(
        [sys.executable, "-m", "kstory.cli", "check-claims", "--workdir", workdir],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "kstory check-claims: failed: 3 of 7 claims fail: caption looks, retrieval, no collapse."
    )
    assert "FAIL  retrieval" in done.stdout and "PASS  captions" in done.stdout


def test_check_claims_without_metrics_says_what_to_run(tmp_path, capsys):
    assert cli.main(["check-claims", "--workdir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "metrics.json does not exist: run `kstory evaluate" in error
