"""The frozen image encoder's features, computed once per unique frame.

A frozen image encoder maps a frame to the same features in every epoch, and
each frame of a story sits in up to `num_context_steps + 1` windows. So kstory
decodes and encodes each distinct frame once (frames are deduplicated by a
hash of their encoded bytes, across windows, stories and splits), stores the
results in memory-mapped arrays in the workdir, and trains from those.

A cache folder holds, one row per unique frame:
- `features.npy`: float32 `(frames, features)`, the image encoder's output
  (`StoryBackbone.image_features`);
- `last_frames.npy`: uint8 `(frames, size, size, 3)`, the frame as the
  residual image decoder reads it (`ImageDecoder.resize_frames`);
- `targets.npy`: uint8 `(frames, size, size, 3)`, the frame as a next-image
  target;
- `frame_keys.txt`: the frames' content hashes, in row order;
- `cache.json`: the fingerprint, sizes, counts and build time.

Invalidation: the folder is named by a fingerprint of everything the arrays
depend on: the encoder's layer configs and weight values, the input and
output image sizes, the image preprocessing, the encoder's dtype policy and
the cache format. Another encoder, other weights or other sizes give another
folder, so a stale cache is never read; the old folder is deleted once the new
one is complete. Frames are keyed by content, so changed data is re-encoded
(the cache is rebuilt when any needed frame is missing). A cache is built in a
temporary folder and renamed into place, so an interrupted build leaves no
partial cache.
"""

import hashlib
import json
import logging
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from kstory.data.pipeline import decode_frame
from kstory.data.pipeline import read_image

CACHE_FORMAT_VERSION = 1
_ARRAYS = ("features", "last_frames", "targets")

logger = logging.getLogger("kstory.cache")


def frame_key(image):
    """The content hash of a frame's encoded bytes (or of its file)."""
    return hashlib.sha256(read_image(image)).hexdigest()


def model_fingerprint(description, model):
    """A SHA-256 of `description` (a JSON-able dict), `model`'s layer configs
    and its weight values: what a cache of its outputs depends on."""
    layers = getattr(model, "layers", [model])
    description = {
        **description,
        # Layer names are left out: auto-generated ones vary between processes.
        "layers": [
            [type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"}]
            for layer in layers
        ],
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def encoder_fingerprint(backbone):
    """A hash of all that a `StoryBackbone`'s cached frame arrays depend on."""
    description = {
        "format": CACHE_FORMAT_VERSION,
        "image_size": backbone.image_size,
        "target_image_size": backbone.target_image_size,
        "image_resize": backbone.image_resize,
        "image_preprocessing": backbone.image_preprocessing_mode,
        "dtype_policy": backbone.image_encoder.dtype_policy.name,
    }
    return model_fingerprint(description, backbone.image_encoder)


class MappedCache:
    """A built cache folder: `cache.json`, the row keys in `KEYS_FILE` and
    the memory-mapped `ARRAYS` (`<name>.npy`).

    Args:
        path: str. The cache folder.
    """

    KEYS_FILE = "frame_keys.txt"
    ARRAYS = _ARRAYS

    def __init__(self, path):
        self.path = path
        with open(os.path.join(path, "cache.json")) as file:
            self.info = json.load(file)
        with open(os.path.join(path, self.KEYS_FILE)) as file:
            self.rows_by_key = {key: row for row, key in enumerate(file.read().split())}
        for name in self.ARRAYS:
            setattr(self, name, np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r"))

    @property
    def fingerprint(self):
        return self.info["fingerprint"]

    def missing_keys(self, keys):
        return [key for key in keys if key not in self.rows_by_key]


class FeatureCache(MappedCache):
    """A built image feature cache, memory-mapped (see the module docstring).

    Args:
        path: str. The cache folder.
    """

    def check_sizes(self, image_size, target_image_size, image_resize="squash"):
        cached = (
            self.info["image_size"],
            self.info["target_image_size"],
            self.info.get("image_resize", "squash"),
        )
        if cached != (image_size, target_image_size, image_resize):
            raise ValueError(
                f"The feature cache {self.path} holds frames for image sizes and resize "
                f"{cached}, not ({image_size}, {target_image_size}, {image_resize!r})."
            )

    def rows(self, stories):
        """The cache row of every frame of `stories`, flattened in story order."""
        rows = []
        for story in stories:
            for frame, image in enumerate(story.images):
                row = self.rows_by_key.get(frame_key(image))
                if row is None:
                    raise ValueError(
                        f"Frame {frame} of story {story.story_id!r} is not in the feature "
                        f"cache {self.path}; rebuild it with build_feature_cache."
                    )
                rows.append(row)
        return np.asarray(rows, np.int64)

    def window_loader(self, stories, num_context_steps):
        """A tf.data map: a window's global frame indices -> its cached arrays.

        Returns `image_features`, `last_frames` (the last two context frames,
        or one with a single step), the `next_image` target in [0, 1] and
        `frame_keys`, the context frames' cache rows (one row per distinct
        frame, so equal frames have equal keys).
        """
        frame_rows = self.rows(stories)
        num_last = min(2, num_context_steps)
        features, last_frames, targets = self.features, self.last_frames, self.targets

        def fetch(indices):
            rows = frame_rows[indices]
            return (
                np.asarray(features[rows[:num_context_steps]]),
                np.asarray(last_frames[rows[num_context_steps - num_last : num_context_steps]]),
                np.asarray(targets[rows[num_context_steps]]),
                rows[:num_context_steps].astype(np.int32),
            )

        def load_frames(indices):
            window_features, window_last_frames, target, keys = tf.numpy_function(
                fetch, [indices], [tf.float32, tf.uint8, tf.uint8, tf.int32], stateful=False
            )
            keys.set_shape((num_context_steps,))
            window_features.set_shape((num_context_steps, features.shape[1]))
            window_last_frames.set_shape((num_last, *last_frames.shape[1:]))
            target.set_shape(targets.shape[1:])
            return {
                "image_features": window_features,
                "last_frames": window_last_frames,
                "next_image": tf.cast(target, tf.float32) / 255.0,
                "frame_keys": keys,
            }

        return load_frames


def build_feature_cache(stories, backbone, cache_dir, batch_size=64):
    """Opens, or builds, the feature cache of `stories` for `backbone`.

    Each unique frame is decoded once and encoded once, whatever the number
    of windows, stories and splits it appears in.

    Args:
        stories: list of `Story`; pass every split that will be read.
        backbone: `StoryBackbone` whose (frozen) image encoder is cached.
        cache_dir: str. Parent folder; the cache is `cache_dir/<fingerprint>`.
        batch_size: int. Frames per encoder call.

    Returns:
        `FeatureCache`.
    """
    fingerprint = encoder_fingerprint(backbone)
    path = os.path.join(cache_dir, fingerprint[:16])
    images_by_key = {}
    for story in stories:
        for image in story.images:
            images_by_key.setdefault(frame_key(image), image)
    if os.path.exists(os.path.join(path, "cache.json")):
        cache = FeatureCache(path)
        missing = cache.missing_keys(images_by_key)
        if not missing:
            return cache
        logger.info("Feature cache %s lacks %d frames; rebuilding it.", path, len(missing))
    num_slots = sum(story.num_frames for story in stories)
    start = time.perf_counter()
    partial = partial_folder(path)
    _write_arrays(partial, list(images_by_key.values()), backbone, batch_size)
    with open(os.path.join(partial, "frame_keys.txt"), "w") as file:
        file.write("\n".join(images_by_key) + "\n")
    info = {
        "fingerprint": fingerprint,
        "image_size": backbone.image_size,
        "target_image_size": backbone.target_image_size,
        "image_resize": backbone.image_resize,
        "num_frames": len(images_by_key),
        "num_story_frames": num_slots,
        "build_seconds": round(time.perf_counter() - start, 2),
        "backend": keras.backend.backend(),
    }
    publish_cache(partial, path, info)
    logger.info(
        "Feature cache %s: %d unique frames of %d story frames, built in %.1f s.",
        path,
        info["num_frames"],
        num_slots,
        info["build_seconds"],
    )
    return FeatureCache(path)


def partial_folder(path):
    """A fresh folder beside the cache folder `path` to build it in."""
    partial = f"{path}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    return partial


def publish_cache(partial, path, info):
    """Writes `cache.json` into the built `partial` folder and renames it to
    `path`; then deletes the other (stale) caches beside it."""
    with open(os.path.join(partial, "cache.json"), "w") as file:
        json.dump(info, file, indent=2)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)
    cache_dir = os.path.dirname(path)
    for name in os.listdir(cache_dir):
        stale = os.path.join(cache_dir, name)
        if stale != path and "." not in name and os.path.isdir(stale):
            logger.info("Deleting the stale cache %s.", stale)
            shutil.rmtree(stale)


def pad_batch(array, batch_size):
    """`array` padded along its first axis to `batch_size` rows: data-parallel
    devices take equal slices."""
    return np.pad(array, [(0, batch_size - len(array))] + [(0, 0)] * (array.ndim - 1))


def _write_arrays(path, images, backbone, batch_size):
    """Decodes and encodes `images` in batches into the cache's .npy files."""
    image_size, target_size = backbone.image_size, backbone.target_image_size
    resize = backbone.image_resize
    frames = keras.Input((image_size, image_size, 3), dtype="uint8")
    encoder = keras.Model(
        frames,
        [backbone.image_features(frames), backbone.image_decoder.resize_frames(frames)],
    )
    arrays = {
        "features": ((encoder.output_shape[0][-1],), "float32"),
        "last_frames": ((target_size, target_size, 3), "uint8"),
        "targets": ((target_size, target_size, 3), "uint8"),
    }
    files = {
        name: np.lib.format.open_memmap(
            os.path.join(path, f"{name}.npy"), mode="w+", dtype=dtype, shape=(len(images), *shape)
        )
        for name, (shape, dtype) in arrays.items()
    }

    def decode(encoded):
        return decode_frame(encoded, image_size, resize), decode_frame(encoded, target_size, resize)

    dataset = (
        tf.data.Dataset.from_generator(
            lambda: (read_image(image) for image in images),
            output_signature=tf.TensorSpec((), tf.string),
        )
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    row = 0
    for context_frames, target_frames in dataset.as_numpy_iterator():
        features, last_frames = encoder.predict_on_batch(pad_batch(context_frames, batch_size))
        end = row + len(context_frames)
        features, last_frames = features[: end - row], last_frames[: end - row]
        files["features"][row:end] = keras.ops.convert_to_numpy(features).astype("float32")
        files["last_frames"][row:end] = keras.ops.convert_to_numpy(last_frames).astype("uint8")
        files["targets"][row:end] = target_frames
        row = end
    for file in files.values():
        file.flush()
