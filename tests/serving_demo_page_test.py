"""`kstory demo`: the page through Gradio's client and in a real browser.

A `kstory demo` process serves the smoke run; the tests call it as a user
would and hold its answers to `kstory predict` on the same story. The browser
test drives the distribution's Chromium (`apt-get install chromium`, which
`.ci/run` does) through Playwright; without it the test fails, never skips.
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import keras
import numpy as np
import pytest
from PIL import Image

from kstory.cli import main
from kstory.data.entities import entities_line
from kstory.evaluation.predict import predict
from kstory.serving.demo_engine import DemoEngine
from kstory.workdir import load_workdir_model

# The page is backend-independent: once, in the torch pass, on the run that
# serve_check_test.py trains and exports (same worker: same xdist group).
pytestmark = [pytest.mark.single_backend, pytest.mark.xdist_group("serve_check")]

CHROMIUM = "/usr/bin/chromium"
# `make results-page` runs the browser test on the tiny run of `make demo`
# and keeps its screenshot.
WORKDIR_ENV = "KSTORY_PAGE_WORKDIR"
SCREENSHOT_ENV = "KSTORY_PAGE_SCREENSHOT"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _snapshot(folder):
    """Every file under `folder` with its size and modification time."""
    return {
        os.path.join(root, name): (os.path.getsize(path), os.path.getmtime(path))
        for root, _, names in os.walk(folder)
        for name in names
        for path in [os.path.join(root, name)]
    }


def _serve(arguments, timeout=300):
    """Starts `kstory demo` and waits until its page answers; returns (process, url)."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kstory.cli", "demo", *arguments, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"kstory demo exited:\n{process.stdout.read()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(1)
    process.kill()
    raise AssertionError(f"kstory demo did not answer within {timeout} s")


@pytest.fixture(scope="module")
def page_workdir(request):
    """The run the page serves: the smoke run, or `make results-page`'s."""
    return os.environ.get(WORKDIR_ENV) or request.getfixturevalue("trained_workdir")


@pytest.fixture(scope="module")
def page(page_workdir):
    before = _snapshot(page_workdir)
    process, url = _serve(["--workdir", page_workdir, "--stories", "6"])
    yield url
    process.terminate()
    process.wait(timeout=60)
    # The page read the run and wrote nothing into it.
    assert _snapshot(page_workdir) == before


@pytest.fixture(scope="module")
def story(page_workdir, tmp_path_factory):
    """The first held-out story, and what `kstory predict` makes of it."""
    engine_stories = DemoEngine.held_out_stories(page_workdir, 1)
    story_id = engine_stories[0].story_id
    expected = predict(page_workdir, story_id, output_dir=str(tmp_path_factory.mktemp("p")))
    expected["image"] = np.asarray(Image.open(expected["image_path"]))
    return engine_stories[0], expected


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_client_gets_the_caption_and_frame_of_kstory_predict(page, story, trained_workdir):
    from gradio_client import handle_file

    held_out, expected = story
    client = _client(page)
    loaded = client.predict(held_out.story_id, api_name="/load_story")
    story_id, frames, captions = loaded[0], loaded[1:5], loaded[5:9]
    assert story_id == held_out.story_id and list(captions) == list(held_out.texts[:4])
    result = client.predict(
        story_id, "greedy", *map(handle_file, frames), *captions, api_name="/predict"
    )
    image, caption, true_image, true_caption, storyboard, nearest, entities, truth = result
    assert caption == expected["caption"]
    # The grounding head's entities, as `kstory predict` gives them.
    assert entities == entities_line(expected["entities"], expected["new_entity_kinds"])
    assert truth == " ".join(held_out.entities[4]) and truth
    np.testing.assert_array_equal(np.asarray(Image.open(image)), expected["image"])
    assert true_caption == held_out.texts[4]
    assert np.asarray(Image.open(true_image)).shape == expected["image"].shape
    assert Image.open(storyboard).width > 5 * expected["image"].shape[1]

    # The neighbours, against a NumPy reference: cosine of the predicted
    # frame's image embedding with every distinct training caption's text
    # embedding.
    model = load_workdir_model(trained_workdir)
    train_captions = sorted(set(DemoEngine.training_captions(trained_workdir)))
    text = model.preprocessor(train_captions)
    texts = keras.ops.convert_to_numpy(
        model.backbone.embed_texts(text["token_ids"], text["padding_mask"])
    )
    image_vector = keras.ops.convert_to_numpy(model.backbone.embed_images(expected["image"][None]))
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    cosine = texts @ (image_vector[0] / np.linalg.norm(image_vector[0]))
    top = np.argsort(-cosine, kind="stable")[:5]
    rows = nearest["data"]
    assert [row[0] for row in rows] == [train_captions[i] for i in top]
    np.testing.assert_allclose([row[1] for row in rows], cosine[top], atol=1e-3)


def _png(path, size, color=(200, 30, 30)):
    Image.new("RGB", size, color).save(path)
    return str(path)


def test_bad_uploads_get_a_message_naming_the_problem(page, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = _client(page)
    frame = handle_file(_png(tmp_path / "frame.png", (40, 30)))
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("four captions, no pixels")
    huge = handle_file(_png(tmp_path / "huge.png", (5000, 20)))
    captions = ["A cat.", "A dog.", "A bird.", "A fish."]
    cases = [
        ([frame] * 3 + [None], captions, "Upload 4 frames; 3 given"),
        ([frame] * 4, ["A cat.", " ", "A bird.", "A fish."], "Caption 2 is empty"),
        ([frame, handle_file(str(not_an_image)), frame, frame], captions, "Frame 2: notes.png"),
        ([frame, frame, huge, frame], captions, "the limit is 4096 on a side"),
    ]
    for frames, texts, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(None, "greedy", *frames, *texts, api_name="/predict")
    # The page still serves after the bad requests.
    result = client.predict(None, "beam", *[frame] * 4, *captions, api_name="/predict")
    assert isinstance(result[1], str) and result[3] == ""


def test_page_in_a_real_browser_shows_the_caption_of_kstory_predict(
    page, page_workdir, story, tmp_path
):
    from playwright.sync_api import expect
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), (
        f"No {CHROMIUM}: install the distribution's browser (apt-get install chromium), "
        "as .ci/run does."
    )
    held_out, expected = story
    screenshot = tmp_path / "page.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.goto(page)
            # Predict with nothing filled in: a message, not a stack trace.
            tab.locator("#predict").click()
            expect(tab.get_by_text("Upload 4 frames; 0 given")).to_be_visible(timeout=60_000)
            tab.goto(page)
            tab.locator("#stories img").first.click()
            expect(tab.locator("#caption-4 textarea")).to_have_value(
                held_out.texts[3], timeout=60_000
            )
            tab.locator("#predict").click()
            shown = tab.locator("#predicted-caption textarea")
            expect(shown).not_to_have_value("", timeout=120_000)
            # What the page shows, read back from it: the report below prints these.
            on_page = {
                "predicted": shown.input_value(),
                "true": tab.locator("#true-caption textarea").input_value(),
            }
            assert on_page["predicted"] == expected["caption"]
            assert on_page["true"] == held_out.texts[4]
            expect(tab.locator("#nearest")).to_contain_text("cosine")
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert Image.open(screenshot).size[0] == 1280
    if os.environ.get(SCREENSHOT_ENV):
        _publish(screenshot, os.environ[SCREENSHOT_ENV], page_workdir, held_out, expected, on_page)


def _publish(screenshot, path, workdir, held_out, expected, on_page):
    """The screenshot into results/, beside a report of what it shows: the
    captions as read from the page, and `kstory predict`'s."""
    from kstory.provenance import provenance
    from kstory.provenance import write_report

    shutil.copy(screenshot, path)
    record = dict(
        provenance(os.path.join(workdir, "config.json")),
        command=f"make results-page ({WORKDIR_ENV}={workdir})",
    )
    body = (
        f"![the page]({os.path.basename(path)})\n\n"
        f"`kstory demo --workdir {workdir}` in headless Chromium, driven by Playwright "
        "(tests/serving_demo_page_test.py, the browser test): the first held-out story, "
        f"{held_out.story_id}, picked from the gallery; greedy caption.\n\n"
        "| | caption |\n|---|---|\n"
        f"| on the page, predicted | {on_page['predicted']} |\n"
        f"| `kstory predict` (the test asserts equality) | {expected['caption']} |\n"
        f"| on the page, true | {on_page['true']} |\n"
    )
    write_report(os.path.splitext(path)[0] + ".md", "The demo page in a browser", body, record)


def test_export_mode_predicts_as_the_keras_model(trained_workdir, story, tmp_path):
    # serve_check_test.py's export when it ran first; else one outside the run,
    # which the page's module-wide check says nothing writes into.
    export_dir = os.path.join(trained_workdir, "export", "tf_saved_model")
    if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        export_dir = str(tmp_path / "export")
        assert main(["export", "--workdir", trained_workdir, "--output", export_dir]) == 0
    held_out, expected = story
    engine = DemoEngine(trained_workdir, export_dir, num_stories=1)
    assert engine.predictor.samplers == ("greedy",)
    context_entities = [list(ids) for ids in held_out.entities[:4]]
    result = engine.predict(
        list(held_out.images[:4]), list(held_out.texts[:4]), entities=context_entities
    )
    assert result["caption"] == expected["caption"]
    np.testing.assert_allclose(result["next_image"], expected["image"], atol=1)
    assert result["entities"] == entities_line(expected["entities"], expected["new_entity_kinds"])


def test_demo_command_errors_name_the_problem(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["demo", "--workdir", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_upload_problem_reads_the_header_before_decoding(tmp_path):
    from kstory.serving.demo_engine import upload_problem

    assert upload_problem(_png(tmp_path / "ok.png", (64, 48))) is None
    big = io.BytesIO()
    Image.new("L", (4097, 1)).save(big, format="PNG")
    (tmp_path / "wide.png").write_bytes(big.getvalue())
    assert "4097x1 pixels" in upload_problem(str(tmp_path / "wide.png"))
    (tmp_path / "blob.jpg").write_bytes(os.urandom(1024))
    assert "not an image" in upload_problem(str(tmp_path / "blob.jpg"))
    truncated = (tmp_path / "ok.png").read_bytes()[:-30]
    (tmp_path / "cut.png").write_bytes(truncated)
    assert "cut.png: undecodable image" in upload_problem(str(tmp_path / "cut.png"))
