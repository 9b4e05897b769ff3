"""The story-continuation task: backbone + losses + caption generation."""

import math

import keras
import keras_hub
from keras import ops

from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.distribution import num_replicas_in_sync
from kstory.distribution import replica_gather
from kstory.distribution import replica_sum
from kstory.losses.info_nce_loss import info_nce
from kstory.models.story_backbone import StoryBackbone

IMAGE_LOSSES = ("mse", "mse+l1")
_MAX_LOGIT_SCALE = 100.0


def _context_steps(inputs):
    """The context-step inputs (and `context_entities`, when given), as
    tensors of the active backend."""
    names = ("images", "token_ids", "padding_mask", "context_entities")
    return {name: ops.convert_to_tensor(inputs[name]) for name in names if name in inputs}


def _load_optimizer_slots_by_name(optimizer, saved_names):
    """Makes `optimizer` restore its saved slots by name, not by position."""
    names = [variable.name for variable in optimizer.variables]
    if sorted(names) != sorted(saved_names) or len(set(names)) != len(names):
        return  # Not the same optimizer state: keep Keras's own checks.
    saved_index = {name: index for index, name in enumerate(saved_names)}

    def load_own_variables(store):
        for variable in optimizer.variables:
            variable.assign(store[str(saved_index[variable.name])])

    optimizer.load_own_variables = load_own_variables


def _unit_rows(embeddings):
    """`(batch, steps, size)` embeddings -> unit-norm float32 rows `(batch * steps, size)`."""
    size = ops.shape(embeddings)[-1]
    return ops.normalize(ops.reshape(ops.cast(embeddings, "float32"), (-1, size)))


@keras.saving.register_keras_serializable(package="kstory")
class StoryModel(keras_hub.models.Task):
    """Predicts the next frame and caption of a story, and trains end to end.

    The training loss sums three terms, each logged under its own name:
    `image_loss` (MSE, optionally plus L1, on the next frame),
    `text_loss` (cross-entropy of the next caption's tokens, padding masked
    out) and `contrastive_loss` (symmetric InfoNCE between the image and text
    embeddings of all `batch x steps` context steps, with a learnable
    temperature initialised at 0.07 and clipped to at least 0.01); with
    `bag_of_words_loss_weight`, a fourth, `bag_of_words_loss`, asks each step's
    state for the following caption's words, in any order; with the
    backbone's grounding head, `grounding_loss` (binary cross-entropy of
    each nameable entity's presence in the next frame and of each kind's
    "new entity" flag, masked by the targets' `entity_mask`). They are
    added in `compute_loss`, the one hook that the TensorFlow, JAX and PyTorch
    trainers all call, so the same step runs on every backend.

    Captions are generated free-running with a keras-hub sampler (greedy,
    beam, top-p, ...), one GRU step per token, stopping at `[SEP]`.

    The tf.data pipeline (`kstory.data.pipeline.make_dataset`) tokenises, so
    `fit` passes batches through unchanged; the preprocessor is kept for
    decoding generated ids and for serving.

    Args:
        backbone: `StoryBackbone`.
        preprocessor: `StoryTextPreprocessor` or None.
        image_loss: str. `"mse"` or `"mse+l1"`.
        image_loss_weight: float. Weight of the image term.
        text_loss_weight: float. Weight of the text term.
        contrastive_loss_weight: float. Weight of the InfoNCE term; 0 turns it
            off (the ablation).
        grounding_loss_weight: float. Weight of the grounding term (with a
            backbone built with `grounding_head`).
        bag_of_words_loss_weight: float. Weight of the bag-of-words term
            (Zhao et al., 2017): a dense head on each step's state predicts a
            distribution over the vocabulary, scored by the log-probability
            of each token of the following caption (see
            `bag_of_words_loss`). Unlike the decoder's loss, whose
            words mostly follow from the context captions' tokens, it rewards
            a story state that carries every fact the next caption states,
            including those only the images show (docs/fusion.md). 0 (the default)
            builds no head.
        pad_token_id: int. Token id ignored by the text loss; defaults to the
            preprocessor's tokenizer's.

    Example:
    ```python
    model = StoryModel(backbone, preprocessor)
    model.fit(make_dataset(stories, preprocessor), epochs=1)
    model.generate(inputs, sampler="beam")
    ```
    """

    backbone_cls = StoryBackbone
    preprocessor_cls = StoryTextPreprocessor

    def __init__(
        self,
        backbone,
        preprocessor=None,
        image_loss="mse",
        image_loss_weight=1.0,
        text_loss_weight=1.0,
        contrastive_loss_weight=0.1,
        bag_of_words_loss_weight=0.0,
        grounding_loss_weight=1.0,
        pad_token_id=None,
        **kwargs,
    ):
        if image_loss not in IMAGE_LOSSES:
            raise ValueError(f"image_loss must be one of {IMAGE_LOSSES}; got {image_loss!r}.")
        if pad_token_id is None:
            if preprocessor is None:
                raise ValueError("Pass pad_token_id when the model has no preprocessor.")
            pad_token_id = preprocessor.tokenizer.pad_token_id
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor

        # === Functional Model ===
        inputs = backbone.input
        outputs = backbone(inputs)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        backbone.apply_freezing()  # `trainable=` from a saved config unfreezes.

        # === Config ===
        self.image_loss = image_loss
        self.image_loss_weight = image_loss_weight
        self.text_loss_weight = text_loss_weight
        self.contrastive_loss_weight = contrastive_loss_weight
        self.bag_of_words_loss_weight = bag_of_words_loss_weight
        self.grounding_loss_weight = grounding_loss_weight
        self.pad_token_id = pad_token_id

        # === Training state ===
        self.log_logit_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(1 / 0.07)),
            dtype="float32",
            name="log_logit_scale",
        )
        self.image_loss_tracker = keras.metrics.Mean(name="image_loss")
        self.text_loss_tracker = keras.metrics.Mean(name="text_loss")
        self.contrastive_loss_tracker = keras.metrics.Mean(name="contrastive_loss")
        self.grounding_loss_tracker = None
        if backbone.grounding is not None:
            self.grounding_loss_tracker = keras.metrics.Mean(name="grounding_loss")
        self.bag_of_words_head = self.bag_of_words_loss_tracker = None
        if bag_of_words_loss_weight:
            # A training-only head beside the functional graph, read by
            # `compute_loss` (as `log_logit_scale` is); made after the
            # graph, so that every backend tracks its weights.
            self.bag_of_words_head = keras.layers.Dense(
                backbone.vocabulary_size, dtype="float32", name="bag_of_words_head"
            )
            self.bag_of_words_head.build((None, backbone.temporal_units))
            self.bag_of_words_loss_tracker = keras.metrics.Mean(name="bag_of_words_loss")

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self.optimizer is not None and self.optimizer.built:
            # A .keras file stores optimizer slots by position, and the
            # position follows `trainable_variables`, whose order differs
            # between backends. The names let another backend match them.
            config["optimizer_variable_names"] = [v.name for v in self.optimizer.variables]
        return config

    def compile_from_config(self, config):
        # Restores the optimizer of a saved model through our compile().
        config = dict(config)
        saved_names = config.pop("optimizer_variable_names", None)
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)
            if saved_names:
                _load_optimizer_slots_by_name(self.optimizer, saved_names)

    def compile(self, optimizer="auto", **kwargs):
        """Compiles with AdamW 1e-4 by default; the losses are built in.

        Args:
            optimizer: `"auto"` (AdamW, learning rate 1e-4, weight decay
                0.01), or any Keras optimizer.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`, ...).
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.01)
        super().compile(optimizer=optimizer, **kwargs)

    def preprocess_samples(self, x, y=None, sample_weight=None):
        # The tf.data pipeline already tokenised; pass batches through.
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def logit_scale(self):
        """The contrastive logit scale, 1 / temperature, clipped to [1, 100]."""
        return ops.exp(ops.clip(self.log_logit_scale, 0.0, math.log(_MAX_LOGIT_SCALE)))

    def contrastive_loss(self, image_embeddings, text_embeddings, token_ids=None, frame_keys=None):
        """Symmetric InfoNCE of all `batch x steps` context steps.

        The negatives are every other step of the global batch: under a
        TensorFlow strategy each replica scores its own steps against all
        replicas' gathered embeddings (JAX's data parallelism runs the step
        over the global batch directly).

        A step whose caption (`token_ids`) or frame (`frame_keys`) equals the
        query's is not a negative: sliding windows put one frame into up to
        four steps of a batch, and template captions repeat. Such candidates
        are masked out of both directions' softmax (`info_nce`'s
        `not_negative`) rather than pushed apart from a copy of themselves.

        Args:
            image_embeddings: `(batch, steps, dim)`.
            text_embeddings: `(batch, steps, dim)`.
            token_ids: `(batch, steps, length)` context captions, or None.
            frame_keys: `(batch, steps)` ints, equal for equal frames, or None.
        """
        images, texts = _unit_rows(image_embeddings), _unit_rows(text_embeddings)
        all_images, offset = replica_gather(images)
        all_texts, _ = replica_gather(texts)
        scale = self.logit_scale()
        num_rows = ops.shape(images)[0]
        labels = offset + ops.arange(num_rows)
        not_negative = None
        if token_ids is not None:
            captions = ops.reshape(token_ids, (num_rows, -1))
            all_captions, _ = replica_gather(captions)
            not_negative = ops.all(
                ops.equal(captions[:, None, :], all_captions[None, :, :]), axis=-1
            )
        if frame_keys is not None:
            keys = ops.reshape(frame_keys, (num_rows,))
            all_keys, _ = replica_gather(keys)
            same_frame = ops.equal(keys[:, None], all_keys[None, :])
            not_negative = (
                same_frame if not_negative is None else (ops.logical_or(not_negative, same_frame))
            )
        return ops.mean(
            info_nce(
                labels,
                scale * ops.matmul(images, ops.transpose(all_texts)),
                scale * ops.matmul(texts, ops.transpose(all_images)),
                not_negative=not_negative,
            )
        )

    def loss_terms(self, y, y_pred, x=None):
        """The three unweighted loss terms, as float32 scalars.

        `x` (the inputs' context `token_ids`) and `y["context_frame_keys"]`,
        when given, tell the contrastive loss which steps are copies of each
        other (see `contrastive_loss`).

        Under a TensorFlow strategy each is this replica's share of the
        global batch's loss (`compute_loss` divides by the replicas, whose
        gradients are summed): the text loss is divided by the global batch's
        token count, and the contrastive loss uses all replicas' negatives.
        """
        next_image = ops.cast(y["next_image"], "float32")
        predicted_image = ops.cast(y_pred["next_image"], "float32")
        image_loss = ops.mean(ops.square(predicted_image - next_image))
        if self.image_loss == "mse+l1":
            image_loss = image_loss + ops.mean(ops.abs(predicted_image - next_image))
        targets = y["next_token_ids"]
        token_losses = keras.losses.sparse_categorical_crossentropy(
            targets, ops.cast(y_pred["next_token_logits"], "float32"), from_logits=True
        )
        text_loss = self._token_mean(token_losses, targets)
        contrastive_loss = self.contrastive_loss(
            y_pred["image_embeddings"],
            y_pred["text_embeddings"],
            token_ids=None if x is None else x.get("token_ids"),
            frame_keys=y.get("context_frame_keys"),
        )
        return image_loss, text_loss, contrastive_loss

    def bag_of_words_loss(self, y, y_pred, x=None):
        """The bag-of-words term: the mean negative log-probability of each
        step's next caption's tokens under the head's one distribution per
        step (padding masked out, counted over the global batch as the text
        loss).

        The last step's next caption is the window's target; an earlier
        step's is the following context caption (`x["token_ids"]`), which
        that step's state has not seen: the temporal model is causal. Every
        window then gives each step's facts, the ones only its frame shows
        included, one target per step rather than one per window.
        """
        step_states = ops.cast(y_pred["step_states"], "float32")
        targets = ops.cast(y["next_token_ids"], "int32")[:, None, :]
        if x is not None and "token_ids" in x and step_states.shape[1] > 1:
            context = ops.cast(x["token_ids"], "int32")[:, 1:, :]
            length = max(context.shape[-1], targets.shape[-1])
            pad = self.pad_token_id

            def padded(ids):
                extra = length - ids.shape[-1]
                return ops.pad(ids, [[0, 0], [0, 0], [0, extra]], constant_values=pad)

            targets = ops.concatenate([padded(context), padded(targets)], axis=1)
        else:
            step_states = step_states[:, -1:, :]
        log_probs = ops.log_softmax(self.bag_of_words_head(step_states), axis=-1)
        return self._token_mean(-ops.take_along_axis(log_probs, targets, axis=-1), targets)

    def grounding_loss(self, y, y_pred):
        """Binary cross-entropy of the next frame's entities: each slot the
        context shows (present or not) and each kind's new-entity flag,
        averaged over the global batch's `entity_mask` (a story without
        grounding adds nothing), as this replica's share."""
        targets = ops.cast(y["next_entities"], "float32")
        mask = ops.cast(y["entity_mask"], "float32")
        losses = ops.binary_crossentropy(
            targets, ops.cast(y_pred["entity_logits"], "float32"), from_logits=True
        )
        count = ops.maximum(replica_sum(ops.sum(mask)), 1.0)
        return ops.sum(losses * mask) * num_replicas_in_sync() / count

    def _token_mean(self, token_losses, targets):
        """The mean of per-token losses over the global batch's non-padding
        `targets`, as this replica's share (see `loss_terms`)."""
        mask = ops.cast(ops.not_equal(targets, self.pad_token_id), "float32")
        num_tokens = ops.maximum(replica_sum(ops.sum(mask)), 1.0)
        return ops.sum(token_losses * mask) * num_replicas_in_sync() / num_tokens

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        image_loss, text_loss, contrastive_loss = self.loss_terms(y, y_pred, x)
        self.image_loss_tracker.update_state(image_loss)
        self.text_loss_tracker.update_state(text_loss)
        self.contrastive_loss_tracker.update_state(contrastive_loss)
        total = self.image_loss_weight * image_loss + self.text_loss_weight * text_loss
        if self.contrastive_loss_weight:
            total = total + self.contrastive_loss_weight * contrastive_loss
        if self.bag_of_words_head is not None:
            bag_of_words_loss = self.bag_of_words_loss(y, y_pred, x)
            self.bag_of_words_loss_tracker.update_state(bag_of_words_loss)
            total = total + self.bag_of_words_loss_weight * bag_of_words_loss
        if self.grounding_loss_tracker is not None and "next_entities" in y:
            grounding_loss = self.grounding_loss(y, y_pred)
            self.grounding_loss_tracker.update_state(grounding_loss)
            total = total + self.grounding_loss_weight * grounding_loss
        if self.losses:
            total = total + ops.sum(self.losses)
        # TensorFlow strategies sum the replicas' gradients.
        return total / num_replicas_in_sync()

    def generate(self, inputs, sampler="greedy", max_length=None):
        """Generates the next caption's token ids, free-running, for a batch.

        Args:
            inputs: dict with `images`, `token_ids` and `padding_mask` of the
                context steps (any `decoder_token_ids` is ignored).
            sampler: str or `keras_hub.samplers.Sampler`. `"greedy"`,
                `"beam"`, `"top_p"`, or a configured sampler such as
                `keras_hub.samplers.TopPSampler(p=0.9, seed=0)`.
            max_length: int. Length of the returned ids, `[CLS]` included;
                defaults to the preprocessor's `decoder_sequence_length`.

        Returns:
            int32 ids `(batch, max_length)`: `[CLS]`, the caption, `[SEP]`,
            then padding.
        """
        return self._generate(self.backbone.encode(_context_steps(inputs)), sampler, max_length)

    def predict_next(self, inputs, sampler="greedy", max_length=None, return_embeddings=False):
        """The next frame and the generated next caption's ids, encoding once.

        This is what the exported `serve` signature computes.

        Args:
            inputs: dict with `images` (uint8 or 0-255 floats), `token_ids`
                and `padding_mask` of the context steps.
            sampler: str or `keras_hub.samplers.Sampler`, as for `generate`.
            max_length: int, as for `generate`.
            return_embeddings: bool. Also return the context's
                `image_embeddings`, `text_embeddings` and `story_state`, as
                the forward pass does (evaluation reads them from this one
                pass).

        Returns:
            dict with `next_image` `(batch, H, W, 3)` floats in [0, 1] and
            `next_token_ids` `(batch, max_length)` int32; with a grounding
            head, `entity_logits` (from `context_entities` in `inputs`, or
            none known).
        """
        steps = _context_steps(inputs)
        encoded = self.backbone.encode(steps)
        token_ids = self._generate(encoded, sampler, max_length)
        outputs = {
            "next_image": ops.cast(
                self.backbone.predict_next_image(
                    steps["images"], encoded["story_state"], self.backbone.embed_caption(token_ids)
                ),
                "float32",
            ),
            "next_token_ids": token_ids,
        }
        if self.backbone.grounding is not None:
            outputs["entity_logits"] = self.backbone.predict_entities(
                encoded, steps.get("context_entities")
            )
        if return_embeddings:
            for name in ("image_embeddings", "text_embeddings", "story_state"):
                outputs[name] = encoded[name]
        return outputs

    def _generate(self, encoded, sampler, max_length):
        if self.preprocessor is None:
            raise ValueError("generate() needs the preprocessor's [CLS]/[SEP] ids.")
        tokenizer = self.preprocessor.tokenizer
        max_length = max_length or self.preprocessor.decoder_sequence_length
        sampler = keras_hub.samplers.get(sampler) if isinstance(sampler, str) else sampler
        story_state = encoded["story_state"]
        cache = self.backbone.text_decoder.initial_cache(
            story_state, encoded.get("memory"), encoded.get("memory_mask")
        )
        batch_size = ops.shape(story_state)[0]
        prompt = ops.concatenate(
            [
                ops.full((batch_size, 1), tokenizer.cls_token_id, "int32"),
                ops.full((batch_size, max_length - 1), self.pad_token_id, "int32"),
            ],
            axis=1,
        )
        mask = ops.concatenate(
            [ops.ones((batch_size, 1), "bool"), ops.zeros((batch_size, max_length - 1), "bool")],
            axis=1,
        )
        end_ids = ops.convert_to_tensor([tokenizer.sep_token_id, self.pad_token_id], "int32")
        only_pad = ops.where(
            ops.arange(self.backbone.vocabulary_size) == self.pad_token_id, 0.0, -1e9
        )

        def next(prompt, cache, index):
            previous = ops.slice(prompt, [0, index - 1], [ops.shape(prompt)[0], 1])[:, 0]
            logits, cache = self.backbone.text_decoder.step(previous, cache)
            logits = ops.cast(logits, "float32")
            # After [SEP], a sequence may only continue with padding, at no
            # cost: beams are then ranked by the caption up to [SEP].
            finished = ops.any(ops.equal(previous[:, None], end_ids[None, :]), axis=1)
            logits = ops.where(finished[:, None], only_pad[None, :], logits)
            return logits, None, cache

        return sampler(
            next=next,
            prompt=prompt,
            cache=cache,
            index=1,
            mask=mask,
            stop_token_ids=[tokenizer.sep_token_id],
            model=self,
        )

    def sequence_log_likelihood(self, inputs, token_ids):
        """Log-probability of each caption under the model, up to its [SEP].

        Args:
            inputs: dict with the context steps.
            token_ids: `(batch, length)` ids starting with `[CLS]`.
        """
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        steps = _context_steps(inputs)
        if self.backbone.grounding is not None and "context_entities" not in steps:
            num_slots = self.backbone.input["context_entities"].shape[-1]
            shape = (ops.shape(token_ids)[0], self.backbone.num_context_steps, num_slots)
            steps["context_entities"] = ops.zeros(shape, "int32")
        outputs = self({**steps, "decoder_token_ids": token_ids[:, :-1]})
        log_probs = ops.log_softmax(ops.cast(outputs["next_token_logits"], "float32"), axis=-1)
        targets = token_ids[:, 1:]
        picked = ops.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        mask = ops.cast(ops.not_equal(targets, self.pad_token_id), "float32")
        return ops.sum(picked * mask, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_loss": self.image_loss,
                "image_loss_weight": self.image_loss_weight,
                "text_loss_weight": self.text_loss_weight,
                "contrastive_loss_weight": self.contrastive_loss_weight,
                "bag_of_words_loss_weight": self.bag_of_words_loss_weight,
                "grounding_loss_weight": self.grounding_loss_weight,
                "pad_token_id": self.pad_token_id,
            }
        )
        return config
