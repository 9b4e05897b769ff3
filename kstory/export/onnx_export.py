"""Exports a `StoryModel`'s embedding and next-image paths as ONNX."""

import json
import os
import sys
import tempfile

import keras
import numpy as np

from kstory.export.backend_subprocess import run_under_backend
from kstory.export.serving_files import write_serving_files
from kstory.workdir import load_model_file

MANIFEST_FILE = "onnx_manifest.json"
# Each graph: its file, input names and output names. Caption generation (a
# data-dependent loop) is not exported to ONNX; the SavedModel has it.
GRAPHS = {
    "embed_images": (("images",), ("image_embedding",)),
    "embed_texts": (("token_ids", "padding_mask"), ("text_embedding",)),
    "next_image": (
        ("images", "token_ids", "padding_mask", "caption_token_ids"),
        ("next_image", "story_state"),
    ),
}


def onnx_graph_functions(backbone):
    """The exported computations, as functions of backend tensors."""

    def next_image(images, token_ids, padding_mask, caption_token_ids):
        encoded = backbone.encode(
            {"images": images, "token_ids": token_ids, "padding_mask": padding_mask}
        )
        story_state = encoded["story_state"]
        caption = backbone.embed_caption(caption_token_ids)
        return backbone.predict_next_image(images, story_state, caption), story_state

    return {
        "embed_images": backbone.embed_images,
        "embed_texts": backbone.embed_texts,
        "next_image": next_image,
    }


def example_inputs(model, batch_size=2):
    """Zero inputs of each graph, as numpy arrays."""
    backbone = model.backbone
    steps, size = backbone.num_context_steps, backbone.image_size
    length = model.preprocessor.sequence_length
    context = {
        "images": np.zeros((batch_size, steps, size, size, 3), "uint8"),
        "token_ids": np.ones((batch_size, steps, length), "int32"),
        "padding_mask": np.ones((batch_size, steps, length), "int32"),
    }
    caption = np.ones((batch_size, model.preprocessor.decoder_sequence_length), "int32")
    return {
        "embed_images": {"images": context["images"][:, 0]},
        "embed_texts": {
            "token_ids": context["token_ids"][:, 0],
            "padding_mask": context["padding_mask"][:, 0],
        },
        "next_image": {**context, "caption_token_ids": caption},
    }


def _write_onnx(model, directory):
    import torch

    class Graph(torch.nn.Module):
        def __init__(self, model, function):
            super().__init__()
            self.model = model  # Registers the Keras (torch) variables.
            self.function = function

        def forward(self, *inputs):
            return self.function(*inputs)

    functions = onnx_graph_functions(model.backbone)
    examples = example_inputs(model)
    batch = torch.export.Dim("batch", min=1, max=4096)
    manifest = {"graphs": {}}
    for name, (input_names, output_names) in GRAPHS.items():
        graph = Graph(model, functions[name]).eval()
        arguments = tuple(torch.as_tensor(examples[name][key]) for key in input_names)
        program = torch.onnx.export(
            graph,
            arguments,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=(tuple({0: batch} for _ in input_names),),
            verbose=False,
        )
        program.save(os.path.join(directory, f"{name}.onnx"))
        manifest["graphs"][name] = {
            "file": f"{name}.onnx",
            "inputs": {
                key: [list(examples[name][key].shape[1:]), str(examples[name][key].dtype)]
                for key in input_names
            },
            "outputs": list(output_names),
        }
    return manifest


def export_onnx(model, directory):
    """Exports the embedding and next-image paths of a `StoryModel` as ONNX.

    Writes three graphs, each with a dynamic batch axis:

    - `embed_images.onnx`: `images` uint8 `(batch, size, size, 3)` ->
      `image_embedding`;
    - `embed_texts.onnx`: `token_ids`, `padding_mask` int32
      `(batch, length)` -> `text_embedding`;
    - `next_image.onnx`: the context steps (`images`, `token_ids`,
      `padding_mask`, as for the SavedModel's `serve`) and the next caption's
      `caption_token_ids` int32 `(batch, decoder_length)`, `[CLS]` first (the
      SavedModel's `next_token_ids`, or any caption to draw) -> `next_image`
      and `story_state`.

    plus `onnx_manifest.json` and the serving files that
    `kstory.serving.StoryServingPreprocessor` reads. Caption generation is not
    exported to ONNX (its loop stops on the data); use the SavedModel.

    Keras's own ONNX export fails on this graph (exact GELU, dynamic
    reshapes), so the graphs are traced by `torch.onnx.export(dynamo=True)`
    under the PyTorch backend; from another backend the model is saved as
    `.keras` and exported by a PyTorch subprocess.

    Args:
        model: a built `StoryModel` with its preprocessor.
        directory: str. The folder to write.

    Returns:
        str, `directory`.
    """
    if keras.config.backend() != "torch":
        with tempfile.TemporaryDirectory() as scratch:
            model_path = os.path.join(scratch, "model.keras")
            model.save(model_path)
            export_onnx_file(model_path, directory)
        return directory
    os.makedirs(directory, exist_ok=True)
    write_serving_files(model, directory, "onnx")
    manifest = _write_onnx(model, directory)
    with open(os.path.join(directory, MANIFEST_FILE), "w") as file:
        json.dump(manifest, file, indent=2)
    return directory


def export_onnx_file(model_path, directory):
    """Exports a `.keras` file as ONNX; off PyTorch, via a PyTorch subprocess."""
    if keras.config.backend() != "torch":
        run_under_backend("torch", __name__, [model_path, directory])
        return directory
    return export_onnx(load_model_file(model_path, compile=False), directory)


def run_onnx(directory, graph, inputs):
    """Runs one exported graph with onnxruntime.

    Args:
        directory: str. The ONNX export folder.
        graph: str. A key of `GRAPHS`.
        inputs: dict of numpy arrays, by input name.

    Returns:
        dict of numpy outputs, by output name.
    """
    import onnxruntime

    if graph not in GRAPHS:
        raise ValueError(f"Unknown ONNX graph {graph!r}; expected one of {sorted(GRAPHS)}.")
    input_names, output_names = GRAPHS[graph]
    session = onnxruntime.InferenceSession(
        os.path.join(directory, f"{graph}.onnx"), providers=["CPUExecutionProvider"]
    )
    outputs = session.run(
        list(output_names), {name: np.asarray(inputs[name]) for name in input_names}
    )
    return dict(zip(output_names, outputs))


def main(argv):
    if len(argv) != 2:
        raise SystemExit("usage: python -m kstory.export.onnx_export MODEL.keras OUTPUT_DIR")
    export_onnx_file(*argv)


if __name__ == "__main__":
    main(sys.argv[1:])
