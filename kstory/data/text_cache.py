"""The frozen text layers' output, computed once per distinct caption.

With the lower text layers frozen (`model.num_frozen_text_layers` >= 1),
`StepTextEncoder` runs them in inference mode, so a caption's frozen states
are the same in every epoch. Each caption is read in up to
`num_context_steps + 1` windows, and a step encodes it twice: as a context
caption, and, as the next caption, for the image decoder (`embed_caption`).
So kstory tokenises and encodes each distinct caption once in each form,
stores the states in memory-mapped arrays, and trains the upper layers from
them (`CachedFeatureTrainer`, beside the image feature cache).

A cache folder holds, one row per distinct caption text:
- `context_states.npy`: float32 `(captions, sequence_length, hidden_dim)`,
  the frozen states of the caption tokenised as a context step;
- `caption_states.npy`: the same shape, of the caption as the next caption
  (`decoder_token_ids` cut to `sequence_length`, `StoryBackbone.caption_tokens`);
- `caption_keys.txt`: the captions' content hashes, in row order;
- `cache.json`: the fingerprint, sizes, counts and build time.

Float32 holds a bfloat16 or float16 state exactly, so training from the
cache is training from tokens under any precision policy.

Invalidation is the image cache's (`kstory.data.feature_cache`): the folder is
named by a fingerprint of the frozen layers' configs and weight values, the
tokenizer's vocabulary, the sequence lengths, the dtype policy and the cache
format; a changed caption is a new key, and a cache lacking one is rebuilt; a
cache is built in a temporary folder and renamed into place.

Size: rows x 2 x sequence_length x hidden_dim x 4 bytes. For StoryReasoning
(about 44k captions) under configs/paper.py (64 tokens, DistilBERT's 768),
that is 44k x 2 x 64 x 768 x 4 B = 17.3 GB on disk, memory-mapped: a batch
reads its rows, and the page cache holds what the machine's memory allows
(docs/performance.md).
"""

import hashlib
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from kstory.data.feature_cache import MappedCache
from kstory.data.feature_cache import model_fingerprint
from kstory.data.feature_cache import pad_batch
from kstory.data.feature_cache import partial_folder
from kstory.data.feature_cache import publish_cache

TEXT_CACHE_FORMAT_VERSION = 1
_ARRAYS = ("context_states", "caption_states")

logger = logging.getLogger("kstory.cache")


def caption_key(text):
    """The content hash of a caption."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_fingerprint(backbone, preprocessor):
    """A hash of all that a `StoryBackbone`'s cached caption states depend on."""
    description = {
        "format": TEXT_CACHE_FORMAT_VERSION,
        "sequence_length": backbone.sequence_length,
        "decoder_sequence_length": preprocessor.decoder_sequence_length,
        "pad_token_id": backbone.pad_token_id,
        "dtype_policy": backbone.text_encoder.backbone.dtype_policy.name,
        "num_frozen_layers": backbone.text_encoder.num_frozen_layers,
        "vocabulary": preprocessor.tokenizer.get_vocabulary(),
    }
    return model_fingerprint(description, backbone.text_encoder.frozen_stack)


class TextCache(MappedCache):
    """A built text cache folder, memory-mapped (see the module docstring).

    Args:
        path: str. The cache folder.
    """

    KEYS_FILE = "caption_keys.txt"
    ARRAYS = _ARRAYS

    def rows(self, stories):
        """The cache row of every frame's caption, flattened in story order."""
        rows = []
        for story in stories:
            for frame, text in enumerate(story.texts):
                row = self.rows_by_key.get(caption_key(text))
                if row is None:
                    raise ValueError(
                        f"The caption of frame {frame} of story {story.story_id!r} is not in "
                        f"the text cache {self.path}; rebuild it with build_text_cache."
                    )
                rows.append(row)
        return np.asarray(rows, np.int64)

    def window_loader(self, stories, num_context_steps):
        """A tf.data map: a window's global frame indices -> `text_states`
        `(num_context_steps, length, hidden)`, the context captions' frozen
        states, and `caption_states` `(length, hidden)`, the next caption's."""
        caption_rows = self.rows(stories)
        context_states, caption_states = self.context_states, self.caption_states

        def fetch(indices):
            rows = caption_rows[indices]
            return (
                np.asarray(context_states[rows[:num_context_steps]]),
                np.asarray(caption_states[rows[num_context_steps]]),
            )

        def load_texts(indices):
            window_states, next_states = tf.numpy_function(
                fetch, [indices], [tf.float32, tf.float32], stateful=False
            )
            window_states.set_shape((num_context_steps, *context_states.shape[1:]))
            next_states.set_shape(caption_states.shape[1:])
            return {"text_states": window_states, "caption_states": next_states}

        return load_texts


def build_text_cache(stories, backbone, preprocessor, cache_dir, batch_size=256):
    """Opens, or builds, the text cache of `stories` for `backbone`.

    Each distinct caption is tokenised by `preprocessor` and run through the
    frozen text layers once per form, whatever the number of windows, stories
    and splits it appears in.

    Args:
        stories: list of `Story`; pass every split that will be read.
        backbone: `StoryBackbone` with at least one frozen text layer
            (`StepTextEncoder.caches`).
        preprocessor: `StoryTextPreprocessor` the batches are tokenised with.
        cache_dir: str. Parent folder, not the image cache's; the cache is
            `cache_dir/<fingerprint>`.
        batch_size: int. Captions per encoder call.

    Returns:
        `TextCache`.
    """
    if not backbone.text_encoder.caches:
        raise ValueError(
            "A text cache needs frozen text layers (model.num_frozen_text_layers >= 1) in a "
            "backbone whose layers are named transformer_layer_<i>."
        )
    fingerprint = text_fingerprint(backbone, preprocessor)
    path = os.path.join(cache_dir, fingerprint[:16])
    texts_by_key = {}
    for story in stories:
        for text in story.texts:
            texts_by_key.setdefault(caption_key(text), text)
    if os.path.exists(os.path.join(path, "cache.json")):
        cache = TextCache(path)
        missing = cache.missing_keys(texts_by_key)
        if not missing:
            return cache
        logger.info("Text cache %s lacks %d captions; rebuilding it.", path, len(missing))
    start = time.perf_counter()
    os.makedirs(cache_dir, exist_ok=True)
    partial = partial_folder(path)
    _write_states(partial, list(texts_by_key.values()), backbone, preprocessor, batch_size)
    with open(os.path.join(partial, "caption_keys.txt"), "w") as file:
        file.write("\n".join(texts_by_key) + "\n")
    info = {
        "fingerprint": fingerprint,
        "num_captions": len(texts_by_key),
        "num_story_captions": sum(story.num_frames for story in stories),
        "build_seconds": round(time.perf_counter() - start, 2),
        "backend": keras.backend.backend(),
    }
    publish_cache(partial, path, info)
    logger.info(
        "Text cache %s: %d distinct captions of %d, built in %.1f s.",
        path,
        info["num_captions"],
        info["num_story_captions"],
        info["build_seconds"],
    )
    return TextCache(path)


def _write_states(path, texts, backbone, preprocessor, batch_size):
    """Tokenises `texts` in both forms and writes their frozen states."""
    stack = backbone.text_encoder.frozen_stack
    length, hidden_dim = backbone.sequence_length, stack.output_shape[-1]
    files = {
        name: np.lib.format.open_memmap(
            os.path.join(path, f"{name}.npy"),
            mode="w+",
            dtype="float32",
            shape=(len(texts), length, hidden_dim),
        )
        for name in _ARRAYS
    }
    takes_segment_ids = backbone.text_encoder.takes_segment_ids
    for start in range(0, len(texts), batch_size):
        chunk = tf.constant(texts[start : start + batch_size])
        tokens = preprocessor(chunk[:, None], chunk)
        caption_ids, caption_mask = map(
            keras.ops.convert_to_numpy,
            backbone.caption_tokens(tokens["decoder_token_ids"].numpy()),
        )
        forms = {
            "context_states": (tokens["token_ids"][:, 0].numpy(), tokens["padding_mask"][:, 0]),
            "caption_states": (caption_ids, caption_mask),
        }
        for name, (token_ids, padding_mask) in forms.items():
            inputs = {
                "token_ids": pad_batch(token_ids, batch_size),
                "padding_mask": pad_batch(np.asarray(padding_mask, "int32"), batch_size),
            }
            if takes_segment_ids:
                inputs["segment_ids"] = np.zeros_like(inputs["token_ids"])
            states = keras.ops.convert_to_numpy(stack.predict_on_batch(inputs))
            files[name][start : start + len(token_ids)] = states[: len(token_ids)]
    for file in files.values():
        file.flush()
