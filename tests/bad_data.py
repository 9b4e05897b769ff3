"""A bad-data fixture set: StoryReasoning shards and a VIST folder with every fault.

Each good story's frame n is a flat image of brightness `frame_value(n)` and
its text starts `frame n of story <id>`, so any misalignment of images and
texts, across frames or stories, is visible downstream. Each writer returns
the reason every broken story must be skipped with (story id -> reason).
"""

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from kstory.data.parquet_shards import STORY_REASONING_SCHEMA

NUM_FRAMES = 6
SIZE = 24
LONG_TEXT = " ".join(["word"] * 10_000)


def frame_value(frame):
    """The brightness of frame `frame` (1-based) of every fixture story."""
    return 20 + 30 * frame


def frame_text(story_id, frame, extra="walks on"):
    return f"frame {frame} of story {story_id} {extra}"


def encode(array, image_format="PNG", mode=None):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def rgb(frame, image_format="PNG"):
    return encode(np.full((SIZE, SIZE + 8, 3), frame_value(frame), np.uint8), image_format)


# Valid images in unusual forms: the pipeline must read each as flat RGB.
def grayscale(frame):
    return encode(np.full((SIZE, SIZE), frame_value(frame), np.uint8))


def rgba(frame):
    array = np.full((SIZE, SIZE, 4), frame_value(frame), np.uint8)
    array[..., 3] = 128
    return encode(array)


def sixteen_bit(frame):
    return encode(np.full((SIZE, SIZE), frame_value(frame) * 257, np.uint16))


def palette_or_cmyk(frame):
    if frame % 2:
        return encode(np.full((SIZE, SIZE, 3), frame_value(frame), np.uint8), mode="P")
    return encode(np.full((SIZE, SIZE, 3), frame_value(frame), np.uint8), "JPEG", mode="CMYK")


def corrupt(frame):
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def truncated(frame):
    data = encode(np.random.default_rng(frame).integers(0, 255, (SIZE, SIZE, 3), np.uint8))
    return data[: len(data) // 2]


def zero_bytes(frame):
    return b""


def tiff(frame):
    return rgb(frame, "TIFF")


def _row(story_id, images, texts=None, frame_count="auto", story=None):
    texts = texts or [frame_text(story_id, n + 1) for n in range(len(images))]
    if story is None:
        story = "\n".join(
            f"<gdi image{n + 1}><gdo char1>{text}</gdo></gdi>" for n, text in enumerate(texts)
        )
    return {
        "story_id": story_id,
        "images": [{"bytes": image, "path": f"{n}.png"} for n, image in enumerate(images)],
        "frame_count": len(images) if frame_count == "auto" else frame_count,
        "chain_of_thought": "",
        "story": story,
    }


def _frames(make_image, num_frames=NUM_FRAMES):
    return [make_image(n + 1) for n in range(num_frames)]


def story_reasoning_rows():
    """`(train_rows, test_rows, expected_skips)` of the StoryReasoning fixture."""
    good = [_row(f"good{n}", _frames(rgb)) for n in range(6)]
    unusual = [
        _row("gray", _frames(grayscale)),
        _row("rgba", _frames(rgba)),
        _row("deep", _frames(sixteen_bit)),
        _row("palette", _frames(palette_or_cmyk)),
        _row("long", _frames(rgb), [frame_text("long", n + 1, LONG_TEXT) for n in range(6)]),
        _row(
            "control",
            _frames(rgb),
            [frame_text("control", n + 1, "\x00walks\x1b[0m on\x7f") for n in range(6)],
        ),
    ]
    texts = [frame_text("x", n + 1) for n in range(NUM_FRAMES)]
    blocks = [f"<gdi image{n + 1}>{text}</gdi>" for n, text in enumerate(texts)]
    broken = {
        "corrupt": _row("corrupt", _frames(rgb)[:2] + [corrupt(3)] + _frames(rgb)[3:]),
        "truncated": _row("truncated", _frames(rgb)[:5] + [truncated(6)]),
        "zero": _row("zero", [zero_bytes(1)] + _frames(rgb)[1:]),
        "tiff": _row("tiff", _frames(tiff)),
        "short": _row("short", _frames(rgb, 3)),
        "gdicount": _row("gdicount", _frames(rgb), story="".join(blocks[:5])),
        "framecount": _row("framecount", _frames(rgb), frame_count=7),
        "unclosed": _row(
            "unclosed", _frames(rgb), story="".join(blocks[:5]) + "<gdi image6>never closed"
        ),
        "nested": _row(
            "nested",
            _frames(rgb),
            story="".join(blocks[:4]) + ("<gdi image5>a <gdi image6>b</gdi> c</gdi>"),
        ),
        "emptytext": _row(
            "emptytext",
            _frames(rgb),
            story="".join(blocks[:5]) + ("<gdi image6> <gdo char1> </gdo> \x00 </gdi>"),
        ),
        "notutf8": _row("notutf8", _frames(rgb), story="".join(blocks).encode() + b"\xff\xfe"),
    }
    # A second story with an earlier id: the first (good0) is kept.
    duplicate = _row("good0", [rgb(1)] * NUM_FRAMES)
    expected = {
        "corrupt": "bad_image",
        "truncated": "bad_image",
        "zero": "bad_image",
        "tiff": "bad_image",
        "short": "too_few_frames",
        "gdicount": "text_image_mismatch",
        "framecount": "frame_count_mismatch",
        "unclosed": "malformed_tags",
        "nested": "malformed_tags",
        "emptytext": "empty_text",
        "notutf8": "not_utf8",
        "good0": "duplicate_id",
    }
    train = good + unusual + list(broken.values()) + [duplicate]
    test = [_row(f"test{n}", _frames(rgb)) for n in range(3)] + [
        _row("testzero", _frames(rgb)[:4] + [zero_bytes(5), rgb(6)])
    ]
    expected_test = {"testzero": "bad_image"}
    return train, test, {"train": expected, "test": expected_test}


def _write_table(rows, path):
    """Writes rows in the StoryReasoning schema; bytes in `story` stay raw bytes."""
    columns = {name: [row[name] for row in rows] for name in STORY_REASONING_SCHEMA.names}
    arrays = []
    for field in STORY_REASONING_SCHEMA:
        values = columns[field.name]
        if field.name == "story":  # A string column holding bytes that are not UTF-8.
            raw = [value if isinstance(value, bytes) else value.encode() for value in values]
            arrays.append(pa.array(raw, pa.binary()).view(pa.string()))
        else:
            arrays.append(pa.array(values, field.type))
    pq.write_table(pa.Table.from_arrays(arrays, schema=STORY_REASONING_SCHEMA), path)


def write_story_reasoning(directory):
    """Writes the fixture as `data/{train,test}-00000-of-00001.parquet`.

    Returns:
        The expected skips: split -> {story id: reason}.
    """
    train, test, expected = story_reasoning_rows()
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        _write_table(rows, os.path.join(directory, "data", f"{split}-00000-of-00001.parquet"))
    return expected


def write_vist(directory):
    """Writes `{train,val,test}.story-in-sequence.json` and `images/` with every fault.

    Returns:
        `(annotations_dir, image_dir, expected)`, expected being split file
        -> {story id: reason}.
    """
    image_dir = os.path.join(directory, "images")
    os.makedirs(image_dir, exist_ok=True)
    makers = {
        "rgb": rgb,
        "gray": grayscale,
        "rgba": rgba,
        "deep": sixteen_bit,
        "corrupt": corrupt,
        "truncated": truncated,
        "zero": zero_bytes,
        "tiff": tiff,
    }

    def photo(kind, story_id, frame):
        name = f"{story_id}_{frame}"
        extension = "tif" if kind == "tiff" else "png"
        with open(os.path.join(image_dir, f"{name}.{extension}"), "wb") as file:
            file.write(makers[kind](frame))
        return name

    def story(story_id, kinds=("rgb",) * 5, texts=None, photo_ids=None):
        texts = texts or [frame_text(story_id, n + 1) for n in range(len(kinds))]
        photo_ids = photo_ids or [photo(kind, story_id, n + 1) for n, kind in enumerate(kinds)]
        return [
            [
                {
                    "story_id": story_id,
                    "photo_flickr_id": photo_id,
                    "worker_arranged_photo_order": order,
                    "text": text,
                    "original_text": text,
                }
            ]
            for order, (photo_id, text) in enumerate(zip(photo_ids, texts))
        ]

    bad_byte_marker = "@@NOT_UTF8@@"
    train = []
    for n in range(6):
        train += story(f"v{n}")
    train += story("vgray", ("gray",) * 5) + story("vrgba", ("rgba",) * 5)
    train += story("vdeep", ("deep",) * 5)
    train += story("vlong", texts=[frame_text("vlong", n + 1, LONG_TEXT) for n in range(5)])
    train += story(
        "vcontrol", texts=[frame_text("vcontrol", n + 1, "\x00walks\x1b on") for n in range(5)]
    )
    train += story("vcorrupt", ("rgb", "corrupt", "rgb", "rgb", "rgb"))
    train += story("vtruncated", ("rgb",) * 4 + ("truncated",))
    train += story("vzero", ("zero",) + ("rgb",) * 4)
    train += story("vtiff", ("rgb",) * 4 + ("tiff",))
    train += story("vshort", ("rgb",) * 4)
    train += story("vmissing", photo_ids=["v0_1", "v0_2", "nowhere", "v0_4", "v0_5"])
    train += story(
        "vempty",
        texts=[
            frame_text("vempty", 1),
            "  \x00 ",
            *[frame_text("vempty", n + 1) for n in range(2, 5)],
        ],
    )
    train += story(
        "vbytes",
        texts=[
            frame_text("vbytes", 1) + bad_byte_marker,
            *[frame_text("vbytes", n + 1) for n in range(1, 5)],
        ],
    )
    train += story("v1", ("rgb",) * 5)  # A second story with id v1.
    expected_train = {
        "vcorrupt": "bad_image",
        "vtruncated": "bad_image",
        "vzero": "bad_image",
        "vtiff": "bad_image",
        "vshort": "wrong_frame_count",
        "vmissing": "missing_image",
        "vempty": "empty_text",
        "vbytes": "not_utf8",
        "v1": "duplicate_id",
    }
    splits = {
        "train": train,
        "val": story("val0") + story("val1"),
        "test": story("test0") + story("test1") + story("testzero", ("zero",) + ("rgb",) * 4),
    }
    for split, annotations in splits.items():
        text = json.dumps({"annotations": annotations})
        data = text.encode("utf-8").replace(bad_byte_marker.encode(), b"\xff\xfe")
        with open(os.path.join(directory, f"{split}.story-in-sequence.json"), "wb") as file:
            file.write(data)
    expected = {"train": expected_train, "val": {}, "test": {"testzero": "bad_image"}}
    return directory, image_dir, expected
