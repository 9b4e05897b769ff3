"""The tf.data pipeline from `Story` records to model-ready batches."""

import hashlib
import logging

import numpy as np
import tensorflow as tf

from kstory.data.entities import ENTITY_KINDS
from kstory.data.entities import unslotted
from kstory.data.entities import window_entities
from kstory.data.windows import story_windows

# How a frame of another shape becomes square (`data.image_resize`).
RESIZE_MODES = ("squash", "crop", "pad")

logger = logging.getLogger("kstory.data")


def read_image(image):
    """A frame's encoded bytes, from bytes or a file path."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    with open(image, "rb") as file:
        return file.read()


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def square_frame(image, size, resize="squash"):
    """An RGB frame `(height, width, 3)` of any shape -> float32 `(size, size, 3)`.

    The one resize (antialiased) of every frame kstory reads: context frames,
    targets, served frames, the feature cache's and the storyboards'.

    Args:
        image: a tensor `(height, width, 3)`, 0-255.
        size: int. Side of the result.
        resize: str. How a frame that is not square becomes square:
            `"squash"` scales each side on its own (shapes stretch);
            `"crop"` keeps the centred square of the shorter side (the sides
            are lost); `"pad"` centres the frame on a black square of the
            longer side (all of it kept, at its own aspect ratio).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"data.image_resize must be one of {RESIZE_MODES}; got {resize!r}.")
    image = tf.cast(image, tf.float32)
    if resize != "squash":
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        if resize == "crop":
            side = tf.minimum(height, width)
            image = tf.image.crop_to_bounding_box(
                image, (height - side) // 2, (width - side) // 2, side, side
            )
        else:
            side = tf.maximum(height, width)
            image = tf.image.pad_to_bounding_box(
                image, (side - height) // 2, (side - width) // 2, side, side
            )
    return tf.image.resize(image, (size, size), antialias=True)


def decode_frame(encoded, size, resize="squash"):
    """Decodes any PNG/JPEG/GIF/BMP to RGB, made square by `square_frame`, uint8."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    return tf.ensure_shape(_to_uint8(square_frame(image, size, resize)), (size, size, 3))


def frame_array(image):
    """A frame given as an array, checked to be RGB `(height, width, 3)`."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"A frame array must be (height, width, 3) RGB; got shape {array.shape}.")
    return array


def load_frame(image, size, resize="squash"):
    """One frame as the pipeline feeds it: uint8 `(size, size, 3)`.

    Args:
        image: encoded bytes (PNG, JPEG, ...), a file path, or an RGB array
            `(height, width, 3)` (uint8, or floats in 0-255).
        size: int. Side of the returned frame.
        resize: str. `"squash"`, `"crop"` or `"pad"` (see `square_frame`).

    Returns:
        numpy uint8 array, resized with antialiasing exactly as in
        `make_dataset`, so that served and evaluated inputs agree.
    """
    if isinstance(image, (bytes, bytearray, str)) or hasattr(image, "__fspath__"):
        return decode_frame(tf.constant(read_image(image)), size, resize).numpy()
    return _to_uint8(square_frame(frame_array(image), size, resize)).numpy()


def load_frames(images, size, batch_size=256, resize="squash"):
    """Story frames (file paths or encoded bytes) as `make_dataset` feeds
    them, in batches: an iterator of numpy uint8 arrays `(batch, size, size, 3)`.

    `load_frame` for many frames at once: tf.data decodes them in parallel,
    in a graph, which is several times faster than one eager call per frame.

    Example:
    >>> import io
    >>> from PIL import Image
    >>> png = io.BytesIO()
    >>> Image.new("RGB", (8, 8), (255, 0, 0)).save(png, format="PNG")
    >>> [batch.shape for batch in load_frames([png.getvalue()] * 3, 4, batch_size=2)]
    [(2, 4, 4, 3), (1, 4, 4, 3)]
    """
    images = list(images)

    def fetch(index):
        return read_image(images[int(index)])

    def decode(index):
        encoded = tf.numpy_function(fetch, [index], tf.string, stateful=False)
        return decode_frame(tf.ensure_shape(encoded, ()), size, resize)

    dataset = tf.data.Dataset.range(len(images)).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    for batch in dataset.batch(batch_size).prefetch(1):
        yield batch.numpy()


def pipeline_options(data_config, grounding=False):
    """The `make_dataset` arguments that a `DataConfig` fixes; with
    `grounding` (a model with a grounding head), the entity slots too."""
    return dict(
        image_size=data_config.image_size,
        target_image_size=data_config.target_image_size,
        image_resize=data_config.image_resize,
        num_context_steps=data_config.num_context_steps,
        window_mode=data_config.window_mode,
        batch_size=data_config.batch_size,
        entity_slots=data_config.entity_slots if grounding else 0,
    )


def make_dataset(
    stories,
    preprocessor,
    batch_size=8,
    shuffle=False,
    seed=0,
    drop_remainder=False,
    num_shards=1,
    shard_index=0,
    **window_options,
):
    """The `(inputs, targets)` dataset of every window, for evaluation and `fit`.

    Each sample is one window: `num_context_steps` consecutive frames and the
    frame after them. Images are decoded and resized in parallel; captions are
    tokenised per batch by `preprocessor`. Windows come in order (story, then
    first frame), or reshuffled each iteration with `shuffle`. `kstory train`
    reads `make_train_stream` instead, which resumes exactly.

    Inputs:
        - `images`: uint8 `(batch, num_context_steps, image_size, image_size, 3)`.
        - `token_ids`, `padding_mask`: int32 `(batch, num_context_steps, L)`.
        - `decoder_token_ids`: `(batch, L')`, the next caption from `[CLS]`.
        - With `feature_cache`, `image_features` float32 `(batch,
          num_context_steps, features)` and `last_frames` uint8 `(batch, 2,
          target_image_size, target_image_size, 3)` replace `images`.
        - With `text_cache`, `text_states` float32 `(batch,
          num_context_steps, L, hidden)` and `caption_states` `(batch, L,
          hidden)`, the frozen text layers' output for the context captions
          and the next caption (`kstory.data.text_cache`).
        - With `entity_slots`, `context_entities` int32 `(batch,
          num_context_steps, num_slots)`: each context frame's grounded
          entities as slots (`kstory.data.entities`).
    Targets:
        - `next_image`: float32 `(batch, target_image_size, target_image_size,
          3)` in [0, 1].
        - `next_token_ids`: `(batch, L')`, the decoder input shifted left by
          one, ending in `[SEP]` and padding.
        - With `frame_keys`, `context_frame_keys`: int32 `(batch,
          num_context_steps)`, equal for context frames with the same encoded
          bytes, so that `StoryModel`'s contrastive loss does not take a
          frame for a negative of itself.
        - With `entity_slots`, `next_entities` and `entity_mask`, float32
          `(batch, num_outputs)`: the next frame's entities and which of them
          the grounding loss counts (see `window_entities`).

    Args:
        stories: list of `Story`.
        preprocessor: `StoryTextPreprocessor`.
        batch_size: int. Samples per batch.
        shuffle: bool. A full permutation of the windows, seeded, and
            reshuffled each iteration (each `fit` epoch).
        seed: int. Seed of the shuffle.
        drop_remainder: bool. Drop the last partial batch.
        num_shards: int. Processes that split each batch (multi-host data
            parallelism): this one reads every `num_shards`-th window, from
            `shard_index`, in batches of `batch_size // num_shards`; every
            shard reads the same number of full batches.
        shard_index: int. This process's shard.
        **window_options: what a window holds, by keyword:
            - `num_context_steps`: int, 4. Context frames per window.
            - `window_mode`: str, `"all"` windows, or only each story's
              `"first"`.
            - `image_size`: int, 64. Side of the context images.
            - `target_image_size`: int, 64. Side of the predicted next image.
            - `image_resize`: str, `"squash"`. How frames become square
              (see `square_frame`).
            - `entity_slots`: int, 0. Slots per entity kind of the grounding
              inputs and targets; 0 leaves them out.
            - `feature_cache`: `FeatureCache` holding every frame of
              `stories`, or None. Then windows read the frozen image
              encoder's features and small frames from it instead of
              decoding images (for `CachedFeatureTrainer`).
            - `text_cache`: `TextCache` holding every caption of `stories`,
              or None. Then windows also carry the frozen text layers'
              states of their captions (for `CachedFeatureTrainer`).
            - `frame_keys`: bool, False. Add the `context_frame_keys` target
              (`kstory train` does). Off by default: a model compiled with
              one loss per target would find no loss for it.

    Example:
    ```python
    dataset = make_dataset(stories, preprocessor, batch_size=2)
    inputs, targets = next(iter(dataset))
    ```
    """
    windows = _Windows(stories, preprocessor, **window_options)
    dataset = tf.data.Dataset.from_tensor_slices(windows.frame_indices)
    if shuffle:
        dataset = dataset.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
    if num_shards > 1:
        dataset = dataset.take(len(windows) // batch_size * batch_size)
    return windows.batches(dataset, batch_size, num_shards, shard_index, drop_remainder)


def make_train_stream(
    stories,
    preprocessor,
    epochs,
    first_epoch=0,
    first_step=0,
    seed=0,
    batch_size=8,
    num_shards=1,
    shard_index=0,
    **window_options,
):
    """The training stream: epochs `first_epoch..epochs-1` in one dataset,
    resumable at any batch.

    Each epoch is a fresh permutation of the windows seeded by `(seed,
    epoch)` and cut to `len(windows) // batch_size` full batches, so epoch k
    has the same batches whether or not the run was interrupted before it,
    and a run resumed at `(first_epoch, first_step)` reads exactly the
    batches it had left. Pass `steps_per_epoch` to `fit`. Samples are those
    of `make_dataset`.

    Args:
        stories: list of `Story`.
        preprocessor: `StoryTextPreprocessor`.
        epochs: int. The epoch the stream ends before.
        first_epoch: int. The epoch the stream starts at (a resumed run's).
        first_step: int. Batches of `first_epoch` to skip (a run resumed
            mid-epoch has trained on them).
        seed: int. Seed of every epoch's permutation.
        batch_size, num_shards, shard_index, **window_options: as for
            `make_dataset`.
    """
    windows = _Windows(stories, preprocessor, **window_options)
    steps = len(windows) // batch_size
    if steps == 0:
        raise ValueError(
            f"{len(windows)} windows make no full batch of {batch_size}; lower data.batch_size."
        )
    if not 0 <= first_step < steps:
        raise ValueError(f"first_step must be in [0, {steps}); got {first_step}.")
    all_windows = tf.constant(windows.frame_indices)

    def epoch_windows(epoch):
        order = tf.random.experimental.stateless_shuffle(
            all_windows, seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order[: steps * batch_size])

    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_windows)
    dataset = dataset.skip(first_step * batch_size)
    return windows.batches(dataset, batch_size, num_shards, shard_index)


class _Windows:
    """The per-window work both datasets share: which frames each window
    takes, how they load, and how a batch is tokenised."""

    def __init__(
        self,
        stories,
        preprocessor,
        num_context_steps=4,
        window_mode="all",
        image_size=64,
        target_image_size=64,
        image_resize="squash",
        entity_slots=0,
        feature_cache=None,
        text_cache=None,
        frame_keys=False,
    ):
        windows = story_windows(stories, num_context_steps, window_mode)
        if len(windows) == 0:
            raise ValueError(
                f"No {num_context_steps + 1}-frame window in {len(stories)} stories; "
                "each story needs more frames than num_context_steps."
            )
        # One flat table of frames; a window is the global index of its frames.
        offsets = np.cumsum([0] + [story.num_frames for story in stories])
        self.frame_indices = (
            offsets[windows[:, 0]][:, None]
            + windows[:, 1][:, None]
            + np.arange(num_context_steps + 1)
        ).astype(np.int64)
        self.frame_texts = tf.constant([text for story in stories for text in story.texts])
        if feature_cache is None:
            self.load_frames = _frame_loader(
                stories, num_context_steps, image_size, target_image_size, image_resize
            )
            self.loaded_keys = ("images",)
        else:
            feature_cache.check_sizes(image_size, target_image_size, image_resize)
            self.load_frames = feature_cache.window_loader(stories, num_context_steps)
            self.loaded_keys = ("image_features", "last_frames")
        self.load_texts = None
        if text_cache is not None:
            self.load_texts = text_cache.window_loader(stories, num_context_steps)
            self.loaded_keys += ("text_states", "caption_states")
        self.preprocessor = preprocessor
        self.num_context_steps = num_context_steps
        self.frame_keys = frame_keys
        self.entities = None
        if entity_slots:
            self.entities = _entity_tables(stories, windows, self.frame_indices, entity_slots)

    def __len__(self):
        return len(self.frame_indices)

    def load_window(self, indices):
        texts = tf.gather(self.frame_texts, indices)
        window = {
            **self.load_frames(indices),
            **(self.load_texts(indices) if self.load_texts else {}),
            "context_texts": texts[: self.num_context_steps],
            "next_text": texts[self.num_context_steps],
        }
        if self.entities is not None:
            row = tf.gather(self.entities["row"], indices[0])
            for name in ("context_entities", "next_entities", "entity_mask"):
                window[name] = tf.gather(self.entities[name], row)
        return window

    def tokenize(self, batch):
        text = self.preprocessor(batch["context_texts"], batch["next_text"])
        inputs = {
            **{key: batch[key] for key in self.loaded_keys},
            "token_ids": text["token_ids"],
            # int32, as the model declares it (a bool batch cannot be
            # averaged across replicas, which Keras does under tf.distribute).
            "padding_mask": tf.cast(text["padding_mask"], tf.int32),
            "decoder_token_ids": text["decoder_token_ids"],
        }
        targets = {"next_image": batch["next_image"], "next_token_ids": text["next_token_ids"]}
        if self.frame_keys:
            targets["context_frame_keys"] = batch["frame_keys"]
        if self.entities is not None:
            inputs["context_entities"] = batch["context_entities"]
            targets["next_entities"] = batch["next_entities"]
            targets["entity_mask"] = batch["entity_mask"]
        return inputs, targets

    def batches(self, dataset, batch_size, num_shards=1, shard_index=0, drop_remainder=False):
        """Window indices -> this shard's tokenised batches, prefetched."""
        if num_shards > 1:
            if batch_size % num_shards:
                raise ValueError(
                    f"batch_size {batch_size} does not split over {num_shards} shards."
                )
            dataset = dataset.shard(num_shards, shard_index)
            batch_size //= num_shards
        dataset = dataset.map(self.load_window, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        dataset = dataset.map(self.tokenize, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)


def frame_key(encoded):
    """A 31-bit key of a frame's encoded bytes: equal bytes, equal keys."""
    digest = hashlib.blake2b(encoded, digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def _entity_tables(stories, windows, frame_indices, slots):
    """Every window's grounding arrays (`window_entities`), as constants, and
    `row`: the window of each first frame (a window is found by its first
    frame's global index)."""
    steps = frame_indices.shape[1] - 1
    arrays = [window_entities(stories[s].entities, start, steps, slots) for s, start in windows]
    context, target, mask = (np.stack(column) for column in zip(*arrays))
    row = np.zeros(int(frame_indices[:, 0].max()) + 1, np.int64)
    row[frame_indices[:, 0]] = np.arange(len(frame_indices))
    if not any(story.entities for story in stories):
        logger.info(
            "None of these %d stories has grounding tags (VIST has none): the grounding "
            "head gets no loss from them, and no entity metrics are scored.",
            len(stories),
        )
    left_out = [
        (story.story_id, entity_id)
        for story in stories
        for frame in story.entities
        for entity_id in unslotted(frame, slots)
    ]
    if left_out:
        logger.warning(
            "%d entity mentions have no grounding slot (more than data.entity_slots=%d of "
            "a kind, or a kind other than %s), e.g. %r in story %r; the grounding head "
            "cannot name them.",
            len(left_out),
            slots,
            "/".join(ENTITY_KINDS),
            left_out[0][1],
            left_out[0][0],
        )
    return {
        "row": tf.constant(row),
        "context_entities": tf.constant(context.astype(np.int32)),
        "next_entities": tf.constant(target),
        "entity_mask": tf.constant(mask),
    }


def _frame_loader(stories, num_context_steps, image_size, target_image_size, resize="squash"):
    """Window frame indices -> decoded `images`, their keys and the `next_image` target."""
    frame_images = [image for story in stories for image in story.images]

    def fetch_images(indices):
        encoded = [read_image(frame_images[i]) for i in indices]
        keys = [frame_key(data) for data in encoded[:num_context_steps]]
        return np.array(encoded, dtype=object), np.array(keys, np.int32)

    def load_frames(indices):
        encoded, keys = tf.numpy_function(
            fetch_images, [indices], [tf.string, tf.int32], stateful=False
        )
        encoded.set_shape((num_context_steps + 1,))
        keys.set_shape((num_context_steps,))
        context = tf.map_fn(
            lambda data: decode_frame(data, image_size, resize),
            encoded[:num_context_steps],
            fn_output_signature=tf.TensorSpec((image_size, image_size, 3), tf.uint8),
        )
        target = decode_frame(encoded[num_context_steps], target_image_size, resize)
        return {
            "images": context,
            "next_image": tf.cast(target, tf.float32) / 255.0,
            "frame_keys": keys,
        }

    return load_frames


SHUFFLED_MODALITIES = ("images", "captions")


def shuffle_context(dataset, modality, num_windows, batch_size):
    """Pairs each window with another window's context images or captions.

    The input-reliance check: a model that uses a modality scores worse when
    that modality comes from another story. Window `i` gets the context
    `modality` of window `(i + num_windows // 2) % num_windows`, everything
    else (the other modality, the targets) its own. The shift is a fixed
    derangement, so the check is deterministic, needs no second copy of the
    split in memory, and for more than a few windows pairs windows of
    different stories.

    Args:
        dataset: an ordered, unshuffled `make_dataset` dataset.
        modality: str. `"images"` (or cached `image_features` and
            `last_frames`) or `"captions"` (`token_ids` and `padding_mask`).
        num_windows: int. Windows in `dataset`.
        batch_size: int. Windows per batch of the result.
    """
    if modality not in SHUFFLED_MODALITIES:
        raise ValueError(f"modality must be one of {SHUFFLED_MODALITIES}; got {modality!r}.")
    if num_windows < 2:
        raise ValueError(f"Shuffling needs at least 2 windows; got {num_windows}.")
    keys = (
        ("images", "image_features", "last_frames")
        if modality == "images"
        else ("token_ids", "padding_mask")
    )
    windows = dataset.unbatch()
    donors = windows.repeat().skip(num_windows // 2)

    @tf.autograph.experimental.do_not_convert  # Plain Python: nothing to convert.
    def swap(own, donor):
        inputs, targets = own
        donor_inputs = donor[0]
        inputs = {
            name: donor_inputs[name] if name in keys else value for name, value in inputs.items()
        }
        return inputs, targets

    paired = tf.data.Dataset.zip(windows, donors).map(swap)
    return paired.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class FrameBatches:
    """A fixed sample of stories' frames, in batches, the same on every pass.

    What `BatchNormRecalibration` runs the image encoder on: re-iterable, and
    each pass yields the same frames in the same order (shuffled once, by
    `seed`), as numpy uint8 arrays `(batch, image_size, image_size, 3)`.
    The frames are decoded once, on the first pass, and kept in memory
    (`batch_size * num_batches` frames).

    Args:
        stories: list of `Story`.
        image_size: int. Side of the frames.
        batch_size: int. Frames per batch.
        num_batches: int. Batches per pass (fewer if the stories have fewer
            frames).
        seed: int. Seed of the sample.
    """

    def __init__(self, stories, image_size, batch_size, num_batches, seed=0, resize="squash"):
        images = [image for story in stories for image in story.images]
        order = np.random.default_rng(seed).permutation(len(images))
        self.images = [images[i] for i in order[: batch_size * num_batches]]
        self.image_size = image_size
        self.batch_size = batch_size
        self.resize = resize
        self.batches = None

    def __iter__(self):
        if self.batches is None:
            self.batches = list(
                load_frames(self.images, self.image_size, self.batch_size, self.resize)
            )
        return iter(self.batches)
