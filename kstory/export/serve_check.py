"""`kstory serve-check`: an export's outputs against the Keras model's."""

import os

import keras
import numpy as np

from kstory.data.entities import entities_line
from kstory.data.entities import entity_probabilities
from kstory.data.entities import predicted_ids
from kstory.data.sources import load_splits
from kstory.data.windows import story_windows
from kstory.export.onnx_export import GRAPHS
from kstory.export.onnx_export import MANIFEST_FILE
from kstory.export.onnx_export import onnx_graph_functions
from kstory.export.onnx_export import run_onnx
from kstory.serving.saved_story_model import SavedStoryModel
from kstory.serving.story_serving_preprocessor import StoryServingPreprocessor
from kstory.workdir import DATA_DIR
from kstory.workdir import MODEL_FILE
from kstory.workdir import load_workdir_config
from kstory.workdir import load_workdir_model


def _workdir_of(export_dir):
    workdir = os.path.dirname(os.path.dirname(os.path.abspath(export_dir)))
    if not os.path.exists(os.path.join(workdir, MODEL_FILE)):
        raise ValueError(
            f"Cannot tell which workdir {export_dir} came from (no {MODEL_FILE} two levels "
            "up); pass --workdir."
        )
    return workdir


def held_out_windows(workdir, split="test", num_windows=8, entities=False):
    """Raw frames and captions of the first windows of a held-out split; with
    `entities`, their context frames' entity ids too (empty without grounding)."""
    config = load_workdir_config(workdir)
    splits, _ = load_splits(config.data, os.path.join(workdir, DATA_DIR))
    stories = splits[split]
    steps = config.data.num_context_steps
    windows = story_windows(stories, steps, config.data.window_mode)[:num_windows]
    if len(windows) == 0:
        raise ValueError(f"The {split} split of {workdir} has no {steps + 1}-frame window.")
    frames = [list(stories[s].images[f : f + steps]) for s, f in windows]
    captions = [list(stories[s].texts[f : f + steps]) for s, f in windows]
    if entities:
        ids = [
            [list(ids) for ids in stories[s].entities[f : f + steps]]
            if stories[s].entities
            else [[] for _ in range(steps)]
            for s, f in windows
        ]
        return frames, captions, ids
    return frames, captions


def _difference(name, served, expected, atol):
    served, expected = np.asarray(served), np.asarray(expected)
    if served.shape != expected.shape:
        return {
            "output": name,
            "max_abs_diff": None,
            "tolerance": atol,
            "ok": False,
            "note": f"shape {served.shape} != {expected.shape}",
        }
    diff = float(np.max(np.abs(served.astype("float64") - expected.astype("float64"))))
    # float32 rounding grows with the values: scale the tolerance by the
    # output's largest magnitude (images in [0, 1] keep `atol` as is).
    tolerance = atol * max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return {"output": name, "max_abs_diff": diff, "tolerance": tolerance, "ok": diff <= tolerance}


def _exact(name, served, expected):
    served, expected = np.asarray(served), np.asarray(expected)
    equal = served.shape == expected.shape and bool(np.all(served == expected))
    rows = int(np.sum(np.all(served == expected, axis=-1))) if served.shape == expected.shape else 0
    return {
        "output": name,
        "max_abs_diff": None,
        "tolerance": "equal",
        "ok": equal,
        "note": f"{rows}/{len(expected)} sequences equal",
    }


def _grounding_checks(model, inputs, expected, outputs, raw_outputs, atol):
    """The grounding head's outputs, tensor and raw; none without a head."""
    if "entity_logits" not in expected:
        return []
    probabilities = entity_probabilities(expected["entity_logits"])
    slots = model.backbone.entity_slots
    lines = [
        entities_line(*predicted_ids(p, context, slots))
        for p, context in zip(probabilities, inputs["context_entities"])
    ]
    return [
        # As probabilities: masked slots' logits are -1e9 (equal in both).
        _difference(
            "serve_tensors/entity_logits (sigmoid)",
            entity_probabilities(outputs["entity_logits"]),
            probabilities,
            atol,
        ),
        _exact(
            "serving_default/entities",
            np.array(raw_outputs["entities"])[:, None],
            np.array(lines)[:, None],
        ),
    ]


def _check_saved_model(export_dir, model, inputs, raw, atol):
    served = SavedStoryModel(export_dir)
    expected = keras.tree.map_structure(keras.ops.convert_to_numpy, model.predict_next(inputs))
    outputs = served.serve(inputs)
    raw_outputs = served.predict(*raw)
    grounding_checks = _grounding_checks(model, inputs, expected, outputs, raw_outputs, atol)
    # `serving_default` returns the frame as uint8: rounding moves it by up to
    # half a level.
    rounded = 0.5 / 255 + atol
    backbone = model.backbone
    first_images = inputs["images"][:, 0]
    first_texts = {name: inputs[name][:, 0] for name in ("token_ids", "padding_mask")}
    return [
        _difference(
            "serve_tensors/next_image", outputs["next_image"], expected["next_image"], atol
        ),
        _exact(
            "serve_tensors/next_token_ids", outputs["next_token_ids"], expected["next_token_ids"]
        ),
        _difference(
            "serving_default/next_image",
            raw_outputs["next_images"] / 255.0,
            expected["next_image"],
            rounded,
        ),
        _exact(
            "serving_default/caption",
            np.array(raw_outputs["captions"])[:, None],
            np.array(model.preprocessor.generate_postprocess(expected["next_token_ids"]))[:, None],
        ),
        _difference(
            "embed_images",
            served.saved_model.signatures["embed_images"](images=first_images)["image_embedding"],
            keras.ops.convert_to_numpy(backbone.embed_images(first_images)),
            atol,
        ),
        _difference(
            "embed_texts",
            served.saved_model.signatures["embed_texts"](**first_texts)["text_embedding"],
            keras.ops.convert_to_numpy(
                backbone.embed_texts(first_texts["token_ids"], first_texts["padding_mask"])
            ),
            atol,
        ),
        *grounding_checks,
    ]


def _check_onnx(export_dir, model, inputs, atol):
    functions = onnx_graph_functions(model.backbone)
    graph_inputs = {
        "embed_images": {"images": inputs["images"][:, 0]},
        "embed_texts": {name: inputs[name][:, 0] for name in ("token_ids", "padding_mask")},
        # The frame of the caption the Keras model generates.
        "next_image": {
            **inputs,
            "caption_token_ids": keras.ops.convert_to_numpy(model.generate(inputs)).astype("int32"),
        },
    }
    checks = []
    for graph, arguments in graph_inputs.items():
        # The graph's own inputs, in order (not the grounding head's).
        arguments = {name: arguments[name] for name in GRAPHS[graph][0]}
        served = run_onnx(export_dir, graph, arguments)
        expected = functions[graph](*arguments.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        for (name, value), reference in zip(served.items(), expected):
            checks.append(
                _difference(f"{graph}/{name}", value, keras.ops.convert_to_numpy(reference), atol)
            )
    return checks


def serve_check(export_dir, workdir=None, split="test", num_windows=8, atol=1e-5):
    """Runs an export on held-out windows and compares it with the Keras model.

    The frames and captions go through `StoryServingPreprocessor`, as a
    server's would, and the workdir's `model.keras` gets the same inputs under
    the current Keras backend. A SavedModel's `serving_default` also gets the
    frames' encoded bytes and the captions as they are: its captions must be
    the model's, and its uint8 frames the model's rounded. Continuous outputs
    must agree within `atol` times their largest magnitude (at least 1:
    images in [0, 1] within `atol`); generated token ids must be equal.

    Args:
        export_dir: str. A SavedModel or ONNX folder from `kstory export`.
        workdir: str. The run it came from; defaults to two levels up
            (`<workdir>/export/<format>`).
        split: str. Held-out split whose first windows are used.
        num_windows: int. How many windows.
        atol: float. Largest allowed difference per unit of the output's
            largest magnitude (at least 1).

    Returns:
        dict with `format`, `num_windows`, `checks` (one per output: name,
        `max_abs_diff`, `tolerance`, `ok`) and `ok`.
    """
    workdir = workdir or _workdir_of(export_dir)
    preprocessor = StoryServingPreprocessor(export_dir)
    frames, captions, entities = held_out_windows(workdir, split, num_windows, entities=True)
    inputs = preprocessor.prepare(frames, captions, entities)
    model = load_workdir_model(workdir)
    if os.path.exists(os.path.join(export_dir, MANIFEST_FILE)):
        export_format, checks = "onnx", _check_onnx(export_dir, model, inputs, atol)
    else:
        export_format, checks = (
            "tf_saved_model",
            _check_saved_model(export_dir, model, inputs, (frames, captions, entities), atol),
        )
    return {
        "format": export_format,
        "exported_under_backend": preprocessor.metadata["exported_under_backend"],
        "workdir": workdir,
        "num_windows": len(frames),
        "backend": keras.config.backend(),
        "checks": checks,
        "ok": all(check["ok"] for check in checks),
    }


def format_serve_check(report):
    lines = [
        f"{report['format']} export (written under {report['exported_under_backend']}) vs "
        f"the Keras model ({report['backend']}), {report['num_windows']} held-out windows:",
        "",
        "| output | max abs diff | tolerance | ok |",
        "|---|---|---|---|",
    ]
    for check in report["checks"]:
        diff = check["max_abs_diff"]
        shown = f"{diff:.2e}" if diff is not None else check.get("note", "")
        tolerance = check["tolerance"]
        tolerance = tolerance if isinstance(tolerance, str) else f"{tolerance:.2e}"
        lines.append(
            f"| {check['output']} | {shown} | {tolerance} | {'yes' if check['ok'] else 'NO'} |"
        )
    lines.append("")
    lines.append("serve-check: " + ("passed" if report["ok"] else "FAILED"))
    return "\n".join(lines)
