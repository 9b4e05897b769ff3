"""Trains one config with parts left out (a loss term, a modality) and compares."""

import dataclasses
import os

from kstory.evaluation.evaluate import evaluate
from kstory.evaluation.input_reliance import reliance_drop
from kstory.training.train import train

_TEXT = ("BLEU-4", "METEOR", "CIDEr")
_IMAGE = ("MSE", "SSIM")
_RETRIEVAL = ("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5")
# Input reliance: how much worse an output gets with a modality shuffled.
_RELIANCE = (
    ("caption", "images", "caption drop, images shuffled"),
    ("next image", "captions", "image drop, captions shuffled"),
)

# Each variant: its run folder, and the model settings it changes. A model
# that sees one modality has no contrastive term (nothing to align), and a
# captions-only model cannot copy the last frame.
ABLATIONS = {
    "full": ("full", {}),
    "no contrastive": ("no_contrastive", {"contrastive_loss_weight": 0.0}),
    "no bag-of-words": ("no_bag_of_words", {"bag_of_words_loss_weight": 0.0}),
    "captions only": (
        "captions_only",
        {"modalities": "captions", "contrastive_loss_weight": 0.0, "image_decoder_residual": False},
    ),
    "images only": ("images_only", {"modalities": "images", "contrastive_loss_weight": 0.0}),
}


def _changes_something(config, name):
    return any(getattr(config.model, key) != value for key, value in ABLATIONS[name][1].items())


def run_ablation(config, workdir, split="test", variants=None):
    """Trains `config` as is and without each part, then scores every run.

    Args:
        config: `Config` of the full model (both modalities, contrastive
            weight above 0).
        workdir: str. Each variant trains in `<workdir>/<folder>` (`full`,
            `no_contrastive`, `no_bag_of_words`, `captions_only`,
            `images_only`) and resumes like `kstory train`.
        split: str. The split all are scored on.
        variants: names from `ABLATIONS`; by default every one that changes
            the config (no "no bag-of-words" run when its weight is already 0).

    Returns:
        dict mapping each variant's name to its metrics.
    """
    if not config.model.contrastive_loss_weight or config.model.modalities != "both":
        raise ValueError(
            "The ablation starts from the full model: it needs model.contrastive_loss_weight "
            "> 0 and model.modalities='both' in the config."
        )
    if variants is None:
        variants = [
            name for name in ABLATIONS if name == "full" or _changes_something(config, name)
        ]
    unknown = set(variants) - set(ABLATIONS)
    if unknown:
        raise ValueError(f"Unknown ablation variants {sorted(unknown)}; known: {list(ABLATIONS)}.")
    same = [name for name in variants if name != "full" and not _changes_something(config, name)]
    if same:
        raise ValueError(
            f"Ablation variants {same} would train the full config again: it already "
            f"has {ABLATIONS[same[0]][1]}."
        )
    results = {}
    for name in variants:
        folder, changes = ABLATIONS[name]
        run_config = dataclasses.replace(config, model=dataclasses.replace(config.model, **changes))
        run_dir = os.path.join(workdir, folder)
        train(run_config, run_dir, verbose=2)
        results[name] = evaluate(run_dir, split)
    return results


def _entity_f1(metrics, row):
    """The entity F1 of `row` (the model or a floor); None without grounding."""
    return metrics["grounding"][row]["all"]["F1"] if "grounding" in metrics else None


def format_ablation(results):
    """A Markdown table: every run, then the floors of the same split."""
    first = next(iter(results.values()))
    columns = (
        list(_TEXT)
        + list(_IMAGE)
        + list(_RETRIEVAL)
        + ["entity F1"]
        + [label for *_, label in _RELIANCE]
    )
    header = "| run | " + " | ".join(columns) + " |\n" + "|---" * (len(columns) + 1) + "|\n"

    def row(name, text, image, retrieval, entity_f1=None, reliance=None):
        cells = (
            [text.get(c) for c in _TEXT]
            + [image.get(c) for c in _IMAGE]
            + [retrieval.get(c) for c in _RETRIEVAL]
            + [entity_f1]
        )
        cells = ["–" if v is None else f"{v:.4f}" for v in cells]
        cells += ["–" if reliance is None else f"{reliance[key]:+.1%}" for key in _RELIANCE]
        return f"| {name} | " + " | ".join(cells) + " |\n"

    table = header
    for name, metrics in results.items():
        folder, changes = ABLATIONS[name]
        described = ", ".join(f"{key}={value}" for key, value in changes.items())
        label = f"{name} ({described})" if described else name
        retrieval = {} if "modalities" in changes else metrics["retrieval"]["model"]
        reliance = {key: reliance_drop(metrics, *key[:2]) for key in _RELIANCE}
        table += row(
            label,
            metrics["text"]["model"],
            metrics["image"]["model"],
            retrieval,
            _entity_f1(metrics, "model"),
            reliance,
        )
    table += row(
        "floor: copy last caption / frame / entities",
        first["text"]["copy last caption"],
        first["image"]["copy last frame"],
        {},
        _entity_f1(first, "last frame's entities"),
    )
    table += row(
        "floor: nearest training context / mean image",
        first["text"]["nearest training context"],
        first["image"]["mean training image"],
        {},
    )
    if "grounding" in first:
        table += row(
            "floor: every context entity", {}, {}, {}, _entity_f1(first, "every context entity")
        )
    table += row("floor: chance retrieval", {}, {}, first["retrieval"]["chance"])
    return (
        f"{first['split']} split, {first['windows']} windows; retrieval over "
        f"{first['retrieval']['frames']} held-out context frames (a hit is any frame with "
        "the query's caption). A one-modality run has no contrastive term, so no "
        "retrieval. Entity F1 is the grounding head's (docs/grounding.md). The last two "
        "columns are the input reliance of `kstory evaluate`: how "
        "much worse the caption's BLEU-4 or METEOR gets with the context images shuffled "
        "across windows, and the next image's MSE with the captions shuffled.\n\n" + table
    )
