"""Trains one config with and without the contrastive loss and compares them."""

import dataclasses
import os

from kstory.evaluation.evaluate import evaluate
from kstory.training.train import train

_TEXT = ("BLEU-4", "METEOR", "CIDEr")
_IMAGE = ("MSE", "SSIM")
_RETRIEVAL = ("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5")


def run_contrastive_ablation(config, workdir, split="test"):
    """Trains `config` as is and with `model.contrastive_loss_weight=0`, then scores both.

    Args:
        config: `Config` whose contrastive weight is above 0.
        workdir: str. Runs go to `<workdir>/contrastive` and
            `<workdir>/no_contrastive` (each resumes like `kstory train`).
        split: str. The split both are scored on.

    Returns:
        dict mapping `"contrastive"` and `"no_contrastive"` to metrics.
    """
    if not config.model.contrastive_loss_weight:
        raise ValueError("The ablation needs model.contrastive_loss_weight > 0 in the config.")
    off = dataclasses.replace(
        config, model=dataclasses.replace(config.model, contrastive_loss_weight=0.0)
    )
    results = {}
    for name, run_config in (("contrastive", config), ("no_contrastive", off)):
        run_dir = os.path.join(workdir, name)
        train(run_config, run_dir, verbose=2)
        results[name] = evaluate(run_dir, split)
    return results


def format_ablation(results, weight):
    """A Markdown table: both runs, then the floors of the same split."""
    on, off = results["contrastive"], results["no_contrastive"]
    columns = list(_TEXT) + list(_IMAGE) + list(_RETRIEVAL)
    header = "| run | " + " | ".join(columns) + " |\n" + "|---" * (len(columns) + 1) + "|\n"

    def row(name, text, image, retrieval):
        cells = [text.get(c) for c in _TEXT] + [image.get(c) for c in _IMAGE] + [
            retrieval.get(c) for c in _RETRIEVAL]
        return f"| {name} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in cells) + " |\n"

    table = header
    table += row(f"contrastive weight {weight}", on["text"]["model"], on["image"]["model"],
                 on["retrieval"]["model"])
    table += row("contrastive weight 0", off["text"]["model"], off["image"]["model"],
                 off["retrieval"]["model"])
    table += row("floor: copy last caption / frame", on["text"]["copy last caption"],
                 on["image"]["copy last frame"], {})
    table += row("floor: nearest training context / mean image",
                 on["text"]["nearest training context"], on["image"]["mean training image"], {})
    table += row("floor: chance retrieval", {}, {}, on["retrieval"]["chance"])
    return (f"{on['split']} split, {on['windows']} windows; retrieval over "
            f"{on['retrieval']['frames']} held-out context frames.\n\n" + table)
