"""Trains one config under several seeds and reports each headline score's spread."""

import dataclasses
import os

import numpy as np

from kstory.evaluation.claims import CLAIMS
from kstory.evaluation.claims import check_claims
from kstory.evaluation.claims import failed_claims
from kstory.evaluation.evaluate import evaluate
from kstory.evaluation.input_reliance import reliance_drop
from kstory.training.train import train

# (section, row, score) of the headline figures; higher is better unless noted.
HEADLINES = (
    ("text", "model", "BLEU-4"),
    ("text", "model", "METEOR"),
    ("text", "model", "CIDEr"),
    ("image", "model", "MSE"),
    ("image", "model", "SSIM"),
    ("retrieval", "model", "image_to_text_R@1"),
    ("retrieval", "model", "text_to_image_R@1"),
)


def headline_scores(metrics):
    """The headline scores of one run's metrics, as a flat dict."""
    scores = {
        f"{row} {name}" if row != "model" else name: metrics[section][row][name]
        for section, row, name in HEADLINES
    }
    scores["caption drop, images shuffled"] = reliance_drop(metrics, "caption", "images")
    scores["image drop, captions shuffled"] = reliance_drop(metrics, "next image", "captions")
    if "grounding" in metrics:
        scores["entity F1"] = metrics["grounding"]["model"]["all"]["F1"]
        scores["new-entity recall"] = metrics["grounding"]["model"]["new_entity_recall"]
    return scores


def run_seeds(config, workdir, seeds=(0, 1, 2), split="test"):
    """Trains and scores `config` once per seed, in `<workdir>/seed_<seed>`.

    The seed sets the initial weights, dropout and the order of the batches;
    the data (`data.generator_seed`, `data.split_seed`) stays the same, so
    the spread is the training's, on one test split.

    Returns:
        dict mapping each seed to its metrics.
    """
    if len(set(seeds)) < 2:
        raise ValueError(f"A spread needs at least two distinct seeds; got {list(seeds)}.")
    results = {}
    for seed in seeds:
        run_dir = os.path.join(workdir, f"seed_{seed}")
        train(dataclasses.replace(config, seed=seed), run_dir, verbose=2)
        results[seed] = evaluate(run_dir, split)
    return results


def _held(failed):
    """`7 of 7`, or `6 of 7 (next frame fails)`."""
    held = f"{len(CLAIMS) - len(failed)} of {len(CLAIMS)}"
    return f"{held} ({', '.join(failed)} fails)" if failed else held


def _held_everywhere(checked):
    seeds_failing = [seed for seed, failed in checked.items() if failed]
    if not seeds_failing:
        return "all, on every seed"
    return f"not on seed {', '.join(str(seed) for seed in seeds_failing)}"


def format_seed_spread(results):
    """Markdown: each headline score's mean ± sample standard deviation, the
    per-seed values, and the floors (which do not depend on the seed)."""
    per_seed = {seed: headline_scores(metrics) for seed, metrics in results.items()}
    first = next(iter(results.values()))
    seeds = list(per_seed)
    lines = [
        f"{first['split']} split, {first['windows']} windows; seeds {seeds}. "
        "Spread: sample standard deviation over the seeds.",
        "",
        "| score | mean ± std | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
        "|---" * (len(seeds) + 2) + "|",
    ]
    for name in per_seed[seeds[0]]:
        values = np.array([per_seed[seed][name] for seed in seeds])
        lines.append(
            f"| {name} | {values.mean():.4f} ± {values.std(ddof=1):.4f} | "
            + " | ".join(f"{value:.4f}" for value in values)
            + " |"
        )
    checked = {seed: failed_claims(check_claims(metrics)) for seed, metrics in results.items()}
    lines.append(
        f"| claims that hold (`kstory check-claims`) | {_held_everywhere(checked)} | "
        + " | ".join(_held(failed) for failed in checked.values())
        + " |"
    )
    text, image = first["text"], first["image"]
    lines += [
        "",
        "Floors (the same for every seed):",
        "",
        "| floor | BLEU-4 | METEOR | CIDEr | MSE | SSIM |",
        "|---|---|---|---|---|---|",
        f"| copy last caption / frame | {text['copy last caption']['BLEU-4']:.4f} | "
        f"{text['copy last caption']['METEOR']:.4f} | {text['copy last caption']['CIDEr']:.4f} | "
        f"{image['copy last frame']['MSE']:.4f} | {image['copy last frame']['SSIM']:.4f} |",
        f"| nearest training context / mean image | "
        f"{text['nearest training context']['BLEU-4']:.4f} | "
        f"{text['nearest training context']['METEOR']:.4f} | "
        f"{text['nearest training context']['CIDEr']:.4f} | "
        f"{image['mean training image']['MSE']:.4f} | {image['mean training image']['SSIM']:.4f} |",
        "",
        f"Retrieval chance R@1: {first['retrieval']['chance']['image_to_text_R@1']:.4f}.",
    ]
    if "grounding" in first:
        floors = {k: v for k, v in first["grounding"].items() if k != "model"}
        lines.append(
            "Entity F1 floors: "
            + "; ".join(f"{name} {scores['all']['F1']:.4f}" for name, scores in floors.items())
            + "."
        )
    return "\n".join(lines) + "\n"
