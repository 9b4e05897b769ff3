import json
import os

import keras
import numpy as np
import pytest
from test_case import to_numpy

from conftest import build_tiny_model
from kstory.export.onnx_export import GRAPHS
from kstory.export.onnx_export import MANIFEST_FILE
from kstory.export.onnx_export import export_onnx
from kstory.export.onnx_export import onnx_graph_functions
from kstory.export.onnx_export import run_onnx


# Under torch the graphs are traced in this process; under TensorFlow and JAX
# the test covers the automatic route through a PyTorch subprocess (about a
# minute), so it runs in the `large` step on every backend.
@pytest.mark.large
def test_onnx_graphs_match_the_keras_model_in_onnxruntime(
    tiny_preprocessor, tiny_dataset, tiny_batch, tmp_path
):
    model = build_tiny_model(tiny_preprocessor, text_decoder_attention_heads=2)
    model.fit(tiny_dataset.take(2), epochs=1, verbose=0)
    directory = str(tmp_path / "onnx")
    export_onnx(model, directory)

    manifest = json.load(open(os.path.join(directory, MANIFEST_FILE)))
    assert set(manifest["graphs"]) == set(GRAPHS)
    for name in ("serving.json", "preprocessor.json", "vocabulary.txt"):
        assert os.path.exists(os.path.join(directory, name)), name

    inputs = {
        name: tiny_batch[0][name].astype("int32") if name != "images" else tiny_batch[0][name]
        for name in ("images", "token_ids", "padding_mask", "decoder_token_ids")
    }
    functions = onnx_graph_functions(model.backbone)
    graph_inputs = {
        "embed_images": {"images": inputs["images"][:, 2]},
        "embed_texts": {name: inputs[name][:, 2] for name in ("token_ids", "padding_mask")},
        "next_image": {
            **{name: inputs[name] for name in ("images", "token_ids", "padding_mask")},
            "caption_token_ids": inputs["decoder_token_ids"],
        },
    }
    for graph, arguments in graph_inputs.items():
        expected = functions[graph](*arguments.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        outputs = run_onnx(directory, graph, arguments)
        assert list(outputs) == list(GRAPHS[graph][1])
        for value, reference in zip(outputs.values(), expected):
            np.testing.assert_allclose(value, to_numpy(reference), atol=1e-5)
        # The batch axis is dynamic.
        single = run_onnx(directory, graph, {k: v[:1] for k, v in arguments.items()})
        np.testing.assert_allclose(list(single.values())[0], to_numpy(expected[0])[:1], atol=1e-5)


def test_unknown_graph_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Unknown ONNX graph 'generate'"):
        run_onnx(str(tmp_path), "generate", {})


def test_graph_functions_agree_with_the_forward_pass(tiny_preprocessor, tiny_batch):
    model = build_tiny_model(tiny_preprocessor, compile=False)
    inputs = tiny_batch[0]
    forward = to_numpy(model(inputs))
    # Given the teacher-forced caption, the graph draws the frame the
    # training forward pass draws.
    next_image, story_state = onnx_graph_functions(model.backbone)["next_image"](
        inputs["images"], inputs["token_ids"], inputs["padding_mask"], inputs["decoder_token_ids"]
    )
    np.testing.assert_allclose(to_numpy(next_image), forward["next_image"], atol=1e-6)
    np.testing.assert_allclose(to_numpy(story_state), forward["story_state"], atol=1e-6)
    assert keras.ops.shape(story_state)[0] == inputs["images"].shape[0]
