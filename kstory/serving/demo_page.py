"""`kstory demo`: a Gradio page to try a trained run in the browser.

Pick a held-out story from the gallery, or upload four frames and type four
captions; the page shows the predicted next frame and caption beside the true
ones (for held-out stories), the storyboard, and the training captions nearest
to the predicted frame in the contrastive embedding.

The page binds to 127.0.0.1 unless told otherwise and never opens a share
link. It reads the run (and the export) it was given and writes nothing into
them: Gradio keeps uploads and outputs in its own temporary folder.
"""

import inspect
import logging
import os

import numpy as np

from kstory.serving.demo_engine import MAX_SIDE
from kstory.serving.demo_engine import MAX_UPLOAD_MB
from kstory.serving.demo_engine import DemoEngine
from kstory.serving.demo_engine import UploadError
from kstory.serving.demo_engine import check_story_inputs

# Before Gradio is imported: no usage reports from a page that may be offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _decoded(frame):
    """A frame's full-size RGB pixels, decoded as the pipeline decodes them:
    the page sends them back as PNG, so the model sees the same pixels."""
    import tensorflow as tf

    from kstory.data.pipeline import read_image

    image = tf.io.decode_image(read_image(frame), channels=3, expand_animations=False)
    return image.numpy()


def _thumbnail(engine, index):
    """The context frames of a held-out story in a square grid, for the gallery."""
    from kstory.data.pipeline import load_frame

    story = engine.story(index)
    frames = [load_frame(frame, 96, engine.data.image_resize) for frame in story["frames"]]
    side = int(np.ceil(np.sqrt(len(frames))))
    frames += [np.full_like(frames[0], 255)] * (side * side - len(frames))
    rows = [np.concatenate(frames[i : i + side], axis=1) for i in range(0, len(frames), side)]
    return np.concatenate(rows, axis=0), f"{story['story_id']}: {story['captions'][0][:60]}"


def _intro(engine):
    steps = engine.num_steps
    return (
        "# kstory: what happens next?\n"
        f"Predicting with {engine.predictor.description}. Pick a held-out story from the "
        f"gallery, or upload {steps} frames and type a caption for each, then press "
        "**Predict**.\n\n"
        f"Frames: PNG, JPEG, GIF, BMP or WEBP, at most {MAX_UPLOAD_MB} MB and {MAX_SIDE} "
        "pixels on a side. Every frame is resized to the model's "
        f"{engine.data.image_size}x{engine.data.image_size} input."
    )


class _DemoHandlers:
    """What the page's events call: Gradio-facing wrappers of a `DemoEngine`."""

    def __init__(self, engine):
        self.engine = engine
        self.story_ids = [story.story_id for story in engine.stories]

    def _story(self, story_id):
        import gradio as gr

        if story_id not in self.story_ids:
            raise gr.Error(f"No held-out story {story_id!r}.", print_exception=False)
        return self.engine.story(self.story_ids.index(story_id))

    def load_story(self, story_id):
        story = self._story(story_id)
        return [story_id, *map(_decoded, story["frames"]), *story["captions"]]

    def predict(self, story_id, sampler, *inputs):
        import gradio as gr

        steps = self.engine.num_steps
        # Unprocessed (the event's `preprocess=False`): an upload is Gradio's
        # file record, so that a file that is not an image reaches the checks.
        frames = [(frame or {}).get("path") for frame in inputs[:steps]]
        captions = [caption or "" for caption in inputs[steps:]]
        truth = entities = None
        if story_id:
            story = self._story(story_id)
            truth = (story["true_frame"], story["true_caption"], story["true_entities"])
            entities = story["entities"]
        try:
            check_story_inputs(frames, captions, steps)
            result = self.engine.predict(frames, captions, sampler, truth, entities)
        except UploadError as error:
            raise gr.Error(str(error), print_exception=False)
        nearest = [[caption, round(score, 3)] for caption, score in result["nearest"]]
        true_caption = truth[1] if truth else ""
        true_entities = " ".join(truth[2]) if truth and truth[2] is not None else ""
        return (
            *(result[name] for name in ("next_image", "caption", "true_image")),
            true_caption,
            result["storyboard"],
            nearest,
            result["entities"] or "",
            true_entities,
        )

    def named_predict(self):
        """`predict` with named parameters, for the API page and `gradio_client`."""

        def predict(*args):
            return self.predict(*args)

        steps = range(1, self.engine.num_steps + 1)
        names = ["story_id", "sampler", *(f"frame_{i}" for i in steps)]
        names += [f"caption_{i}" for i in steps]
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        predict.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in names])
        return predict


def _story_inputs(gr, engine, story_ids):
    """The gallery, the story picker, and a frame and caption per step."""
    gallery = gr.Gallery(
        value=[_thumbnail(engine, i) for i in range(len(story_ids))],
        label="Held-out stories (the run's test split): click one",
        columns=6,
        height=420,
        object_fit="contain",
        allow_preview=False,
        elem_id="stories",
    )
    story = gr.Dropdown([("(your own story)", ""), *story_ids], value="", label="Held-out story")
    frames, captions = [], []
    with gr.Row():
        for i in range(engine.num_steps):
            with gr.Column(min_width=120):
                frames.append(
                    gr.Image(
                        type="filepath",
                        format="png",
                        sources=["upload"],
                        label=f"Frame {i + 1}",
                        height=160,
                        elem_id=f"frame-{i + 1}",
                    )
                )
                captions.append(
                    gr.Textbox(label=f"Caption {i + 1}", lines=2, elem_id=f"caption-{i + 1}")
                )
    return gallery, story, frames, captions


def _outputs(gr):
    """Predicted and true frame and caption, the storyboard, the neighbours."""
    with gr.Row():
        predicted_image = gr.Image(label="Predicted next frame", format="png", height=200)
        true_image = gr.Image(label="True next frame", format="png", height=200)
    with gr.Row():
        predicted_caption = gr.Textbox(label="Predicted caption", elem_id="predicted-caption")
        true_caption = gr.Textbox(label="True caption", elem_id="true-caption")
    storyboard = gr.Image(label="Storyboard", format="png")
    nearest = gr.Dataframe(
        headers=["training caption", "cosine"],
        label="Training captions nearest to the predicted frame (contrastive embedding)",
        elem_id="nearest",
    )
    with gr.Row():
        predicted_entities = gr.Textbox(
            label="Predicted entities in the next frame (grounding head; +new: a newcomer)",
            elem_id="predicted-entities",
        )
        true_entities = gr.Textbox(label="True entities", elem_id="true-entities")
    return [
        predicted_image,
        predicted_caption,
        true_image,
        true_caption,
        storyboard,
        nearest,
        predicted_entities,
        true_entities,
    ]


def build_demo(engine):
    """The Gradio page of a `DemoEngine`.

    Its API (for `gradio_client`): `/load_story` takes a held-out story id and
    returns it (the id, its frames and its captions); `/predict` takes the
    story id (`""` for a story of one's own), the sampler, the frames and the
    captions, and returns the predicted frame and caption, the true ones, the
    storyboard, the nearest training captions, and the predicted and true
    entities of the next frame (empty without a grounding head). A caption of
    one's own may carry grounding tags (`<gdo obj1>...</gdo>`), which name its
    frame's entities.

    Returns:
        A `gradio.Blocks`, not launched.
    """
    import gradio as gr

    handlers = _DemoHandlers(engine)

    def select_story(event: gr.SelectData):
        return handlers.load_story(handlers.story_ids[event.index])

    with gr.Blocks(title="kstory demo", analytics_enabled=False) as demo:
        gr.Markdown(_intro(engine))
        gallery, story, frames, captions = _story_inputs(gr, engine, handlers.story_ids)
        sampler = gr.Radio(list(engine.predictor.samplers), value="greedy", label="Caption sampler")
        button = gr.Button("Predict", variant="primary", elem_id="predict")
        outputs = _outputs(gr)
        story_inputs = [story, *frames, *captions]
        gallery.select(select_story, None, story_inputs, api_name=False)
        story.input(handlers.load_story, story, story_inputs, api_name="load_story")
        # Editing an input makes the story one's own: no truth to show.
        for component in frames:
            component.upload(lambda: "", None, story, api_name=False)
            component.clear(lambda: "", None, story, api_name=False)
        for component in captions:
            component.input(lambda: "", None, story, api_name=False)
        button.click(
            handlers.named_predict(),
            [story, sampler, *frames, *captions],
            outputs,
            api_name="predict",
            # Gradio's image preprocessing fails on a file that is not an
            # image with a generic error; kstory's checks name the problem.
            preprocess=False,
        )
    return demo


def serve_demo(workdir, export_dir=None, port=7860, host="127.0.0.1", num_stories=24):
    """Builds the page of a run and serves it until interrupted (`kstory demo`).

    Args:
        workdir: str. A trained run's folder.
        export_dir: str or None. Predict with this SavedModel export.
        port: int. The port.
        host: str. The address to bind; 0.0.0.0 serves every interface.
        num_stories: int. Held-out stories in the gallery.
    """
    engine = DemoEngine(workdir, export_dir, num_stories=num_stories)
    demo = build_demo(engine)
    # Gradio's own request log, one INFO line per request, is noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        show_error=False,
        inbrowser=False,
        quiet=True,
        prevent_thread_lock=True,
    )
    print(f"kstory demo: serving {workdir} on http://{host}:{port}/ (Ctrl+C stops).", flush=True)
    demo.block_thread()
