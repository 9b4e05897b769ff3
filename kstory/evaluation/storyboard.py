"""Draws a story's context, the predicted next step and the true one, as a PNG."""

import textwrap

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

_PANEL = 160
_TEXT_HEIGHT = 200
_CAPTION_LINES = 11


def _font(size=12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes.
        return ImageFont.load_default()


def _to_pil(image):
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(array).resize((_PANEL, _PANEL), Image.Resampling.NEAREST)


def draw_storyboard(
    context_images,
    context_captions,
    predicted_image,
    predicted_caption,
    true_image=None,
    true_caption=None,
    path=None,
    title=None,
    predicted_entities=None,
    true_entities=None,
):
    """Draws context frames with captions, then prediction and (optionally) truth.

    With grounding, the entities predicted for the next frame and its true
    ones are listed under their captions.

    Args:
        context_images: list of `(H, W, 3)` arrays, uint8 or floats in [0, 1].
        context_captions: list of str.
        predicted_image: `(H', W', 3)` array in [0, 1].
        predicted_caption: str.
        true_image: the real next frame, or None (e.g. for a new story).
        true_caption: str or None.
        path: str. Where to save the PNG; the image is returned either way.
        title: str. A line above the panels.
        predicted_entities: the grounding head's prediction as one line
            (`kstory.data.entities.entities_line`), or None.
        true_entities: the true next frame's entity ids, or None.

    Returns:
        A `PIL.Image`.
    """
    panels = [
        (image, caption, f"frame {i + 1}", None)
        for i, (image, caption) in enumerate(zip(context_images, context_captions))
    ]
    predicted_line = None
    if predicted_entities is not None:
        predicted_line = predicted_entities or "none"
    panels.append((predicted_image, predicted_caption, "predicted next", predicted_line))
    if true_image is not None:
        true_line = None if true_entities is None else " ".join(true_entities) or "none"
        panels.append((true_image, true_caption or "", "true next", true_line))
    header = 24 if title else 0
    width = len(panels) * (_PANEL + 10) + 10
    board = Image.new("RGB", (width, header + _PANEL + _TEXT_HEIGHT + 30), "white")
    draw = ImageDraw.Draw(board)
    font = _font()
    if title:
        draw.text((10, 6), title, fill="black", font=font)
    for index, (image, caption, label, entities) in enumerate(panels):
        x = 10 + index * (_PANEL + 10)
        colour = {"predicted next": "#c0392b", "true next": "#27ae60"}.get(label, "black")
        draw.text((x, header + 4), label, fill=colour, font=font)
        board.paste(_to_pil(image), (x, header + 22))
        if label != "frame 1" and index == len(context_images):
            draw.rectangle(
                (x - 2, header + 20, x + _PANEL + 1, header + _PANEL + 23), outline=colour, width=2
            )
        lines = textwrap.wrap(caption, width=26)[:_CAPTION_LINES]
        draw.multiline_text((x, header + _PANEL + 28), "\n".join(lines), fill="black", font=font)
        if entities is not None:
            wrapped = "\n".join(textwrap.wrap(f"entities: {entities}", width=26)[:2])
            y = header + _PANEL + 28 + _CAPTION_LINES * 15
            draw.multiline_text((x, y), wrapped, fill=colour, font=font)
    if path:
        board.save(path)
    return board
