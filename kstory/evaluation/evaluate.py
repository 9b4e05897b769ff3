"""Scores a trained workdir on a held-out split, beside the floors."""

import logging
import os

import keras
import numpy as np

from kstory.data.entities import entity_probabilities
from kstory.data.entities import predicted_ids
from kstory.data.pipeline import load_frames
from kstory.data.pipeline import make_dataset
from kstory.data.pipeline import pipeline_options
from kstory.data.pipeline import shuffle_context
from kstory.data.sources import load_splits
from kstory.data.windows import story_windows
from kstory.evaluation import floors
from kstory.evaluation.grounding_metrics import entity_scores
from kstory.evaluation.grounding_metrics import floor_windows
from kstory.evaluation.image_metrics import image_scores
from kstory.evaluation.input_reliance import format_input_reliance
from kstory.evaluation.input_reliance import input_reliance
from kstory.evaluation.predict import predict_next_function
from kstory.evaluation.predict import save_prediction
from kstory.evaluation.retrieval import retrieval_chance
from kstory.evaluation.retrieval import retrieval_recall
from kstory.evaluation.text_metrics import caption_scores
from kstory.evaluation.text_metrics import start_caption_scorers
from kstory.workdir import DATA_DIR
from kstory.workdir import METRICS_JSON_FILE
from kstory.workdir import METRICS_MD_FILE
from kstory.workdir import STORYBOARDS_DIR
from kstory.workdir import atomic_path
from kstory.workdir import load_workdir_config
from kstory.workdir import load_workdir_model
from kstory.workdir import write_json

_MEAN_IMAGE_WINDOWS = 2048

logger = logging.getLogger("kstory.evaluate")


def run_model(model, stories, data_config, sampler="greedy", shuffle=None):
    """Free-running predictions for every window of `stories`, in window order.

    Args:
        model: a `StoryModel`.
        stories: list of `Story`.
        data_config: `DataConfig`.
        sampler: str. The keras-hub sampler for captions.
        shuffle: None, or `"images"` / `"captions"`: give each window another
            window's context images or captions (`shuffle_context`).
    """
    collected = {
        name: []
        for name in (
            "next_image",
            "image_embeddings",
            "text_embeddings",
            "story_state",
            "last_image",
            "target_image",
        )
    }
    captions = []
    grounding = model.backbone.grounding is not None
    if grounding:
        collected.update(entity_logits=[], context_entities=[])
    options = pipeline_options(data_config, grounding)
    dataset = make_dataset(stories, model.preprocessor, **options)
    if shuffle is not None:
        num_windows = len(
            story_windows(stories, data_config.num_context_steps, data_config.window_mode)
        )
        dataset = shuffle_context(dataset, shuffle, num_windows, options["batch_size"])
    predict_next = predict_next_function(model, sampler)
    for inputs, targets in dataset:
        inputs = {name: value.numpy() for name, value in inputs.items()}
        # Free-running (never the teacher-forced forward pass, whose frame is
        # drawn from the true next caption); one pass gives the embeddings too.
        names = ("images", "token_ids", "padding_mask", "context_entities")
        predicted = predict_next({name: inputs[name] for name in names if name in inputs})
        for name in ("next_image", "image_embeddings", "text_embeddings", "story_state"):
            collected[name].append(keras.ops.convert_to_numpy(predicted[name]))
        if grounding:
            collected["entity_logits"].append(
                keras.ops.convert_to_numpy(predicted["entity_logits"])
            )
            collected["context_entities"].append(inputs["context_entities"])
        collected["last_image"].append(inputs["images"][:, -1])
        collected["target_image"].append(targets["next_image"].numpy())
        captions += model.preprocessor.generate_postprocess(
            keras.ops.convert_to_numpy(predicted["next_token_ids"])
        )
    results = {name: np.concatenate(values) for name, values in collected.items()}
    results["captions"] = captions
    return results


def _resize(images, size):
    images = np.asarray(images, np.float32) / 255.0
    if images.shape[1] == size:
        return images
    return keras.ops.convert_to_numpy(keras.ops.image.resize(images, (size, size)))


def _mean_training_image(train_stories, train_windows, data_config):
    """The mean next frame of the first `_MEAN_IMAGE_WINDOWS` training
    windows, in [0, 1], loaded as the pipeline loads targets."""
    steps = data_config.num_context_steps
    targets = [train_stories[s].images[start + steps] for s, start in train_windows]
    total = 0.0
    for batch in load_frames(
        targets[:_MEAN_IMAGE_WINDOWS],
        data_config.target_image_size,
        resize=data_config.image_resize,
    ):
        total = total + batch.astype(np.float64).sum(axis=0)
    return (total / min(len(targets), _MEAN_IMAGE_WINDOWS) / 255.0).astype(np.float32)


def _step_embeddings(results, stories, windows, num_context_steps):
    """One image and one text embedding, and the caption, per distinct held-out
    context frame."""
    seen, images, texts, captions = set(), [], [], []
    for row, (story_index, start) in enumerate(windows):
        for step in range(num_context_steps):
            key = (story_index, start + step)
            if key not in seen:
                seen.add(key)
                images.append(results["image_embeddings"][row, step])
                texts.append(results["text_embeddings"][row, step])
                captions.append(stories[story_index].texts[start + step])
    return np.stack(images), np.stack(texts), captions


def mean_pairwise_cosine(embeddings):
    """Mean cosine similarity over all pairs of distinct rows: 1.0 when the
    embeddings have collapsed to one direction."""
    rows = np.asarray(embeddings, np.float64)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    similarity = rows @ rows.T
    count = len(rows)
    return float((similarity.sum() - np.trace(similarity)) / max(count * (count - 1), 1))


def evaluate(workdir, split="test", sampler="greedy", model=None, storyboards=0):
    """Scores a trained workdir on `split`; writes metrics.json and metrics.md.

    Text is generated free-running (never teacher-forced) and scored with the
    COCO caption protocol; images by MSE, PSNR and SSIM; the embeddings by
    image<->text retrieval over the split's distinct context frames. Every
    score stands beside its floors: copy the last caption, the nearest
    training context's caption, copy the last frame, the mean training image.

    The input-reliance section runs the split twice more, once with each
    window's context images and once with its context captions taken from
    another window (`shuffle_context`), and says for each output how much it
    falls: a model that ignores a modality scores the same either way.

    Args:
        workdir: str. A trained run's folder.
        split: str. `"test"` or `"validation"`.
        sampler: str. The keras-hub sampler for captions.
        model: the workdir's loaded `StoryModel`, to skip reloading it.
        storyboards: int. Also draw the first window of the first this many
            stories, from the predictions scored, into `<workdir>/storyboards`
            (their paths are the metrics' `storyboards`).

    Returns:
        The metrics dict.
    """
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' or 'test'; got {split!r}.")
    data = load_workdir_config(workdir).data
    # METEOR's Java process loads its tables while the model predicts.
    start_caption_scorers()
    model = model or load_workdir_model(workdir)
    splits, _ = load_splits(data, os.path.join(workdir, DATA_DIR))
    stories, train_stories = splits[split], splits["train"]
    steps = data.num_context_steps
    windows = story_windows(stories, steps, data.window_mode)
    train_windows = story_windows(train_stories, steps, data.window_mode)
    references = [stories[s].texts[start + steps] for s, start in windows]
    results = run_model(model, stories, data, sampler)
    shuffled = {
        modality: run_model(model, stories, data, sampler, shuffle=modality)
        for modality in ("images", "captions")
    }
    # Every caption set in one scoring call (one tokenizer process).
    text = caption_scores(
        references,
        {
            "model": results["captions"],
            "copy last caption": floors.copy_last_captions(stories, windows, steps),
            "nearest training context": floors.nearest_neighbour_captions(
                train_stories, train_windows, stories, windows, steps
            ),
            **{f"{m} shuffled": shuffled[m]["captions"] for m in shuffled},
        },
    )
    shuffled_text = {m: text.pop(f"{m} shuffled") for m in shuffled}
    target = results["target_image"]
    mean_image = _mean_training_image(train_stories, train_windows, data)
    image = {
        "model": image_scores(results["next_image"], target),
        "copy last frame": image_scores(_resize(results["last_image"], target.shape[1]), target),
        "mean training image": image_scores(np.broadcast_to(mean_image, target.shape), target),
    }
    reliance_runs = {"as is": {**results, "text": text["model"], "image": image["model"]}}
    for modality, run in shuffled.items():
        reliance_runs[f"{modality} shuffled"] = {
            "story_state": run["story_state"],
            "text": shuffled_text[modality],
            "image": image_scores(run["next_image"], target),
        }
    examples = list(zip(references, results["captions"]))[:5]
    metrics = {
        "split": split,
        "windows": len(windows),
        "sampler": sampler,
        "text": text,
        "image": image,
        "retrieval": _retrieval_metrics(results, stories, windows, steps),
        "input_reliance": input_reliance(reliance_runs),
        "examples": [{"reference": r, "prediction": p} for r, p in examples],
    }
    _add_grounding(metrics, results, stories, windows, data)
    if storyboards:
        metrics["storyboards"] = _draw_storyboards(
            results, stories, windows, data, storyboards, os.path.join(workdir, STORYBOARDS_DIR)
        )
    _write_metrics(metrics, workdir)
    return metrics


def predicted_window_entities(results, slots):
    """Per window, the ids the grounding head predicts and the kinds it
    flags as getting a new entity (`predicted_ids`)."""
    probabilities = entity_probabilities(results["entity_logits"])
    return [
        predicted_ids(window_probabilities, context, slots)
        for window_probabilities, context in zip(probabilities, results["context_entities"])
    ]


def _add_grounding(metrics, results, stories, windows, data):
    """With a grounding head: each window's predicted entities into
    `results["entities"]`, and their scores beside the floors into
    `metrics["grounding"]` (none when the split has no grounding tags)."""
    if "entity_logits" not in results:
        return
    results["entities"] = predicted_window_entities(results, data.entity_slots)
    if not any(story.entities for story in stories):
        logger.info("The %s split has no grounding tags: no entity metrics.", metrics["split"])
        return
    metrics["grounding"] = _grounding_metrics(
        results["entities"], stories, windows, data.num_context_steps
    )


def _grounding_metrics(predicted, stories, windows, steps):
    """Entity scores of the model and of the floors, on the same windows."""
    floors_windows = floor_windows(stories, windows, steps)
    model_windows = [
        dict(window, predicted=set(ids), new_kinds=set(new_kinds))
        for window, (ids, new_kinds) in zip(floors_windows["every context entity"], predicted)
    ]
    return {
        "model": entity_scores(model_windows),
        **{name: entity_scores(rows) for name, rows in floors_windows.items()},
    }


def _retrieval_metrics(results, stories, windows, steps):
    """Image<->text retrieval over the split's distinct context frames, with
    chance and the collapse check (the image embeddings' mean cosine)."""
    step_images, step_texts, step_captions = _step_embeddings(results, stories, windows, steps)
    return {
        "model": retrieval_recall(step_images, step_texts, step_captions),
        "chance": retrieval_chance(step_captions),
        "frames": len(step_images),
        "distinct_captions": len(set(step_captions)),
        "image_embedding_mean_cosine": mean_pairwise_cosine(step_images),
    }


def _write_metrics(metrics, workdir):
    write_json(os.path.join(workdir, METRICS_JSON_FILE), metrics)
    with atomic_path(os.path.join(workdir, METRICS_MD_FILE)) as incoming:
        with open(incoming, "w") as file:
            file.write(format_metrics(metrics))


def _draw_storyboards(results, stories, windows, data, count, output_dir):
    """Storyboards of each of the first `count` stories' first window, from
    the predictions in `results` (`run_model`)."""
    paths, drawn = [], set()
    for row, (story_index, start) in enumerate(windows):
        if len(drawn) == count:
            break
        if story_index in drawn:
            continue
        drawn.add(story_index)
        saved = save_prediction(
            stories[story_index],
            int(start),
            data,
            results["next_image"][row],
            results["captions"][row],
            output_dir,
            predicted_entities=results["entities"][row] if "entities" in results else None,
        )
        paths.append(saved["storyboard_path"])
    return paths


def _table(rows, columns):
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{values[c]:.4f}" if c in values else "–" for c in columns)
            + " |"
        )
    return "\n".join(lines)


def _grounding_section(grounding):
    """The entity table's lines (none without grounding metrics)."""
    if not grounding:
        return []
    kinds = [k for k in ("characters", "objects", "backgrounds") if k in grounding["model"]]
    columns = ["precision", "recall", "F1", *(f"{k} F1" for k in kinds), "new-entity recall"]
    rows = {
        name: {
            "precision": scores["all"]["precision"],
            "recall": scores["all"]["recall"],
            "F1": scores["all"]["F1"],
            **{f"{k} F1": scores[k]["F1"] for k in kinds if k in scores},
            "new-entity recall": scores["new_entity_recall"],
        }
        for name, scores in grounding.items()
    }
    model = grounding["model"]
    return [
        "### Next frame's entities",
        f"Micro-averaged over windows: {model['all']['true']} entities of the next frames that "
        f"the context shows (nameable by id), and {model['new_entities']} that it never "
        "showed, scored apart as new-entity recall (docs/grounding.md).",
        "",
        _table(rows, columns),
        "",
    ]


def format_metrics(metrics):
    """Renders metrics as Markdown tables, model first, then its floors."""
    text_columns = [
        c
        for c in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
        if c in metrics["text"]["model"]
    ]
    retrieval = metrics["retrieval"]
    parts = [
        f"## {metrics['split']} split: {metrics['windows']} windows "
        f"(captions by {metrics['sampler']} decoding, free-running)",
        "",
        "### Next caption",
        _table(metrics["text"], text_columns),
        "",
        "### Next image",
        _table(metrics["image"], ["MSE", "PSNR", "SSIM"]),
        "",
        f"### Image-text retrieval over {retrieval['frames']} held-out context frames",
        f"A hit is any candidate with the query's caption ({retrieval['distinct_captions']} "
        "distinct captions); chance counts the same way. Mean pairwise cosine of the "
        f"frames' image embeddings: {retrieval['image_embedding_mean_cosine']:.3f} "
        "(1.000 would mean they have collapsed).",
        "",
        _table(
            {"model": retrieval["model"], "chance": retrieval["chance"]}, list(retrieval["model"])
        ),
        "",
        *_grounding_section(metrics.get("grounding")),
        "### Input reliance",
        "Each window's context images, then its context captions, are replaced by another "
        "window's; an output that uses a modality scores worse without it.",
        "",
        format_input_reliance(metrics["input_reliance"]),
        "",
        "### Examples",
    ]
    parts += [
        f"- reference: {e['reference']}\n  prediction: {e['prediction']}"
        for e in metrics["examples"]
    ]
    return "\n".join(parts) + "\n"
