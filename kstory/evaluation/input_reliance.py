"""Input reliance: how much each output falls when one input modality is shuffled."""

import numpy as np

# Each output's headline scores: (name, True when higher is better).
_CAPTION_SCORES = (("BLEU-4", True), ("METEOR", True))
_IMAGE_SCORES = (("MSE", False),)
RELIES_THRESHOLD = 0.10
USES_THRESHOLD = 0.01


def relative_change(before, after, higher_is_better):
    """How much worse `after` is than `before`, as a fraction of `before` (< 0: better)."""
    if before == 0:
        return 0.0
    change = (before - after) / abs(before)
    return change if higher_is_better else -change


def story_state_change(as_is, shuffled):
    """Mean relative L2 distance of the shuffled run's story states from the as-is ones."""
    as_is, shuffled = np.asarray(as_is, np.float64), np.asarray(shuffled, np.float64)
    distance = np.linalg.norm(shuffled - as_is, axis=-1)
    return float(np.mean(distance / np.maximum(np.linalg.norm(as_is, axis=-1), 1e-12)))


def _verdict(output, modality, scores_before, scores_after, score_names):
    """One plain-words line for one output and one shuffled modality."""
    worst = None
    for name, higher_is_better in score_names:
        if name not in scores_before:
            continue
        change = relative_change(scores_before[name], scores_after[name], higher_is_better)
        if worst is None or change > worst[1]:
            worst = (name, change, higher_is_better)
    name, change, higher_is_better = worst
    direction = "falls" if higher_is_better else "rises"
    if scores_after[name] == scores_before[name]:
        direction = "stays"
    if change >= RELIES_THRESHOLD:
        claim = f"the {output} relies on the {modality}"
    elif change >= USES_THRESHOLD:
        claim = f"the {output} uses the {modality} a little"
    else:
        claim = f"the {output} ignores the {modality}"
    return {
        "output": output,
        "shuffled": modality,
        "score": name,
        "as_is": scores_before[name],
        "shuffled_score": scores_after[name],
        "relative_drop": change,
        "verdict": (
            f"{claim}: {name} {direction} from {scores_before[name]:.4g} to "
            f"{scores_after[name]:.4g} ({change:+.1%} worse) when they are shuffled"
        ),
    }


def input_reliance(runs):
    """The input-reliance section of the metrics.

    Args:
        runs: dict mapping `"as is"`, `"images shuffled"` and `"captions
            shuffled"` to dicts with `text` (caption scores), `image` (image
            scores) and `story_state` (`(windows, units)` array).

    Returns:
        dict with each run's `text` and `image` scores and story-state change,
        and `verdicts`: for each output and shuffled modality, the headline
        score before and after, its relative drop, and a plain-words line.
    """
    as_is = runs["as is"]
    section = {"thresholds": {"relies": RELIES_THRESHOLD, "uses": USES_THRESHOLD}}
    for name, run in runs.items():
        section[name] = {
            "text": run["text"],
            "image": run["image"],
            "story_state_change": story_state_change(as_is["story_state"], run["story_state"]),
        }
    verdicts = []
    for modality in ("images", "captions"):
        shuffled = runs[f"{modality} shuffled"]
        verdicts.append(
            _verdict("caption", modality, as_is["text"], shuffled["text"], _CAPTION_SCORES)
        )
        verdicts.append(
            _verdict("next image", modality, as_is["image"], shuffled["image"], _IMAGE_SCORES)
        )
    section["verdicts"] = verdicts
    return section


def reliance_drop(metrics, output, modality):
    """How much worse `output` got with `modality` shuffled, from a run's metrics."""
    for verdict in metrics["input_reliance"]["verdicts"]:
        if verdict["output"] == output and verdict["shuffled"] == modality:
            return verdict["relative_drop"]
    raise KeyError((output, modality))


def format_input_reliance(section):
    """Markdown: a table of the three runs, then one verdict per line."""
    columns = [
        ("BLEU-4", "text"),
        ("METEOR", "text"),
        ("CIDEr", "text"),
        ("MSE", "image"),
        ("SSIM", "image"),
    ]
    columns = [(name, part) for name, part in columns if name in section["as is"][part]]
    lines = [
        "| run | " + " | ".join(name for name, _ in columns) + " | story state change |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for run in ("as is", "images shuffled", "captions shuffled"):
        cells = [f"{section[run][part][name]:.4f}" for name, part in columns]
        lines.append(
            f"| {run} | " + " | ".join(cells) + f" | {section[run]['story_state_change']:.3f} |"
        )
    lines.append("")
    lines += [f"- {verdict['verdict']}" for verdict in section["verdicts"]]
    return "\n".join(lines)
