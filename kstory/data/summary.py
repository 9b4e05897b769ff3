"""Describes the data a config yields: splits, skips, tokens, one batch."""

import io

import numpy as np
from PIL import Image

from kstory.data.pipeline import make_dataset
from kstory.data.pipeline import pipeline_options
from kstory.data.sources import load_splits
from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.data.tokenizer_loading import load_tokenizer
from kstory.data.windows import story_windows


def _pixels(image):
    with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0


def _change_shares(stories, num_context_steps, window_mode):
    """Shares of windows whose target image / caption / entities differ from
    the last context frame's."""
    windows = story_windows(stories, num_context_steps, window_mode)
    image_changed = text_changed = entities_changed = 0
    for story_index, start in windows:
        story = stories[story_index]
        last, target = start + num_context_steps - 1, start + num_context_steps
        last_pixels, target_pixels = _pixels(story.images[last]), _pixels(story.images[target])
        if last_pixels.shape != target_pixels.shape or (
            np.abs(last_pixels - target_pixels).mean() > 1 / 255
        ):
            image_changed += 1
        text_changed += story.texts[last] != story.texts[target]
        if story.entities:
            entities_changed += set(story.entities[last]) != set(story.entities[target])
    count = max(len(windows), 1)
    return image_changed / count, text_changed / count, entities_changed / count


def summarize_data(config, data_dir):
    """Loads the data of a `DataConfig` and describes it.

    Args:
        config: `DataConfig`.
        data_dir: str. Where embedded data is written.

    Returns:
        A dict of plain values (JSON-serialisable).
    """
    splits, skip_logs = load_splits(config, data_dir)
    train_texts = [text for story in splits["train"] for text in story.texts]
    tokenizer = load_tokenizer(config.tokenizer, train_texts, config.vocabulary_size)
    caption_lengths = [len(ids) + 2 for ids in tokenizer(train_texts)]
    summary = {
        "source": config.source,
        "splits": {},
        "skipped": {log.source: log.counts() for log in skip_logs},
        "tokenizer": {
            "source": config.tokenizer,
            "vocabulary_size": int(tokenizer.vocabulary_size()),
            "longest_caption_tokens": int(max(caption_lengths)),
            "mean_caption_tokens": round(float(np.mean(caption_lengths)), 1),
            "truncated_captions": int(sum(n > config.sequence_length for n in caption_lengths)),
        },
    }
    for name, stories in splits.items():
        windows = story_windows(stories, config.num_context_steps, config.window_mode)
        image_share, text_share, entity_share = _change_shares(
            stories, config.num_context_steps, config.window_mode
        )
        summary["splits"][name] = {
            "stories": len(stories),
            "frames": sum(story.num_frames for story in stories),
            "windows": len(windows),
            "target_image_differs_from_last": round(image_share, 3),
            "target_caption_differs_from_last": round(text_share, 3),
            "target_entities_differ_from_last": round(entity_share, 3),
        }
    preprocessor = StoryTextPreprocessor(
        tokenizer, config.sequence_length, config.decoder_sequence_length
    )
    dataset = make_dataset(
        splits["train"], preprocessor, **pipeline_options(config, grounding=True)
    )
    inputs, targets = next(iter(dataset))
    summary["batch"] = {
        name: f"{tuple(tensor.shape)} {tensor.dtype.name}"
        for name, tensor in {**inputs, **targets}.items()
    }
    example = splits["train"][0]
    summary["example"] = {
        "story_id": example.story_id,
        "context": list(example.texts[: config.num_context_steps]),
        "next": example.texts[config.num_context_steps],
    }
    return summary


def format_summary(summary):
    """Renders `summarize_data`'s dict as a short report."""
    lines = [f"source: {summary['source']}", ""]
    header = f"{'split':<11}{'stories':>8}{'frames':>8}{'windows':>9}"
    lines.append(f"{header}  next differs from last (image / caption / entities)")
    for name, split in summary["splits"].items():
        lines.append(
            f"{name:<11}{split['stories']:>8}{split['frames']:>8}{split['windows']:>9}  "
            f"{split['target_image_differs_from_last']:.1%} / "
            f"{split['target_caption_differs_from_last']:.1%} / "
            f"{split['target_entities_differ_from_last']:.1%}"
        )
    lines.append("")
    for source, counts in summary["skipped"].items():
        lines.append(f"skipped in {source}: {counts or 'none'}")
    tok = summary["tokenizer"]
    lines.append(
        f"tokenizer: {tok['source']}, {tok['vocabulary_size']} tokens; captions "
        f"{tok['mean_caption_tokens']} tokens on average, longest "
        f"{tok['longest_caption_tokens']}, {tok['truncated_captions']} truncated"
    )
    lines.append("one training batch:")
    lines += [f"  {name}: {shape}" for name, shape in summary["batch"].items()]
    example = summary["example"]
    lines.append(f"example, story {example['story_id']}:")
    lines += [f"  frame {i + 1}: {text}" for i, text in enumerate(example["context"])]
    lines.append(f"  next:    {example['next']}")
    return "\n".join(lines)
