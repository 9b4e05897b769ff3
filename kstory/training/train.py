"""Trains a `StoryModel` into a workdir, resuming an interrupted run."""

import contextlib
import csv
import json
import logging
import os

import keras

from kstory.config import config_to_dict
from kstory.data.feature_cache import build_feature_cache
from kstory.data.pipeline import FrameBatches
from kstory.data.pipeline import make_dataset
from kstory.data.pipeline import make_train_stream
from kstory.data.pipeline import pipeline_options
from kstory.data.skip_log import format_skip_report
from kstory.data.sources import load_splits
from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.data.text_cache import build_text_cache
from kstory.data.tokenizer_loading import load_tokenizer
from kstory.data.windows import story_windows
from kstory.distribution import data_parallel
from kstory.models.builders import build_story_model
from kstory.provenance import provenance
from kstory.training.atomic_model_checkpoint import AtomicModelCheckpoint
from kstory.training.batch_norm_recalibration import BatchNormRecalibration
from kstory.training.cached_feature_trainer import CachedFeatureTrainer
from kstory.training.loss_curve import plot_loss_curve
from kstory.training.non_finite_loss_guard import NonFiniteLossGuard
from kstory.training.resumed_early_stopping import ResumedEarlyStopping
from kstory.training.train_config import jit_compile_argument
from kstory.training.training_state_backup import TrainingStateBackup
from kstory.workdir import BACKUP_DIR
from kstory.workdir import BEST_WEIGHTS_PATH
from kstory.workdir import CONFIG_FILE
from kstory.workdir import CONFIG_HINT
from kstory.workdir import DATA_DIR
from kstory.workdir import FEATURE_CACHE_DIR
from kstory.workdir import HISTORY_FILE
from kstory.workdir import LOGS_DIR
from kstory.workdir import LOSS_CURVE_FILE
from kstory.workdir import MODEL_FILE
from kstory.workdir import SKIPPED_FILE
from kstory.workdir import TEXT_CACHE_DIR
from kstory.workdir import TRAIN_PROVENANCE_FILE
from kstory.workdir import atomic_path
from kstory.workdir import read_json
from kstory.workdir import write_json
from kstory.workdir_lock import WorkdirLock
from kstory.workdir_state_error import WorkdirStateError
from kstory.workdir_state_error import error_summary

logger = logging.getLogger("kstory.train")


def check_workdir_config(config, workdir):
    """Writes the config into a new workdir; refuses another run's workdir.

    A workdir holds one run. Re-running with the same config resumes it; a
    different architecture or data there would silently mix two runs.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    values = config_to_dict(config)
    if os.path.exists(path):
        previous = read_json(path, CONFIG_HINT)
        # The run's data and architecture, and what its checkpoints hold.
        keys = [(section, key) for section in ("data", "model") for key in values[section]]
        keys.append(("train", "image_feature_cache"))
        changed = sorted(
            f"{section}.{key}"
            for section, key in keys
            if previous.get(section, {}).get(key) != values[section][key]
        )
        if changed:
            raise ValueError(
                f"Workdir {workdir} holds a run with another config (differs in "
                f"{', '.join(changed)}); use a new --workdir."
            )
    os.makedirs(workdir, exist_ok=True)
    write_json(path, values)


def _callbacks(config, workdir, backup):
    """kstory's callbacks, in the order they must run.

    The NaN guard comes first, so it raises before anything saves a broken
    state; the backup comes last, after the epoch's log row and checkpoint,
    so a resume never skips them (a re-done epoch rewrites them identically).
    """
    history = backup.history
    best_val_loss = min((row["val_loss"] for row in history if "val_loss" in row), default=None)
    callbacks = [
        NonFiniteLossGuard(
            hint=" Lower train.learning_rate, or check the data; the last backup and "
            f"the best checkpoint in {workdir} hold the last finite weights."
        ),
        AtomicModelCheckpoint(
            os.path.join(workdir, BEST_WEIGHTS_PATH),
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_val_loss,
        ),
        keras.callbacks.CSVLogger(os.path.join(workdir, HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, LOGS_DIR), write_graph=False),
    ]
    if config.train.early_stopping_patience:
        callbacks.append(
            ResumedEarlyStopping(
                history, monitor="val_loss", patience=config.train.early_stopping_patience
            )
        )
    return callbacks + [backup]


def _write_skip_report(skip_logs, path):
    """Logs and writes which stories the readers skipped, and why, by story id."""
    for log in skip_logs:
        logger.info(log.summary())
    write_json(path, {log.source: log.to_json() for log in skip_logs})


def _rewrite_history_csv(path, history):
    """The run's `history.csv` as the backup knows it: one row per finished epoch.

    A run killed between writing an epoch's row and backing it up would
    otherwise log that epoch twice.
    """
    names = sorted({name for row in history for name in row})
    with atomic_path(path) as incoming, open(incoming, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", *names])
        if history:
            writer.writeheader()
        for epoch, row in enumerate(history):
            writer.writerow({"epoch": epoch, **row})


def _fit_phases(backup, epochs, workdir):
    """The `fit()` calls left: `(first_epoch, epochs, first_step)` each.

    A run stopped mid-epoch first finishes that epoch from its next batch,
    then trains the later epochs.
    """
    first_epoch, first_step = backup.epoch, backup.step
    if backup.stopped_early:
        logger.info("%s stopped early at epoch %d; nothing to train.", workdir, first_epoch)
        return []
    if first_epoch or first_step:
        logger.info("Resuming %s at epoch %d, batch %d.", workdir, first_epoch + 1, first_step + 1)
    if first_step >= backup.steps_per_epoch:
        raise ValueError(
            f"The backup in {workdir} is at batch {first_step} of an epoch of "
            f"{backup.steps_per_epoch} batches; the training data changed. Use a new --workdir."
        )
    phases = []
    if first_step:
        phases.append((first_epoch, first_epoch + 1, first_step))
        first_epoch += 1
    if first_epoch < epochs:
        phases.append((first_epoch, epochs, 0))
    return phases


def _uses_feature_cache(config):
    setting, frozen = config.train.image_feature_cache, config.model.freeze_image_encoder
    if setting == "true" and not frozen:
        raise ValueError(
            "train.image_feature_cache=true needs a frozen image encoder "
            "(model.freeze_image_encoder=True)."
        )
    return setting == "true" or (setting == "auto" and frozen)


def _uses_text_cache(config, model, uses_feature_cache):
    setting = config.train.text_feature_cache
    needs = []
    if not uses_feature_cache:
        needs.append("the image feature cache (train.image_feature_cache)")
    if not model.backbone.text_encoder.caches:
        needs.append("frozen text layers (model.num_frozen_text_layers >= 1)")
    if setting == "true" and needs:
        raise ValueError(f"train.text_feature_cache=true needs {' and '.join(needs)}.")
    return setting == "true" or (setting == "auto" and not needs)


def _distribution(config, coordinator_address, num_processes, process_id):
    """Switches on `config.distribution`: (replicas, model scope, make_dataset shards)."""
    if config.distribution == "none":
        return 1, contextlib.nullcontext, {}
    setup = data_parallel(coordinator_address, num_processes, process_id)
    batch_size = config.data.batch_size
    if batch_size % setup.num_replicas:
        raise ValueError(
            f"data.batch_size {batch_size} (the global batch) does not split evenly over "
            f"{setup.num_replicas} replicas; make it a multiple of {setup.num_replicas}."
        )
    logger.info(
        "Data parallel: %s, %d replicas of %d windows each.",
        setup.engine,
        setup.num_replicas,
        batch_size // setup.num_replicas,
    )
    shards = dict(num_shards=setup.num_processes, shard_index=setup.process_index)
    return setup.num_replicas, setup.scope, shards


def _validation_options(dataset_options, stories, data, replicas):
    """Validation batches of one window per replica, the last partial one dropped:
    replicas take equal slices of every batch."""
    if replicas == 1:
        return dataset_options
    num_windows = len(story_windows(stories, data.num_context_steps, data.window_mode))
    if num_windows < replicas:
        raise ValueError(
            f"The validation split has {num_windows} windows, fewer than the {replicas} "
            "replicas that each take one; add stories (data.num_stories) or raise "
            "data.validation_fraction."
        )
    logger.info(
        "Validation on %d of %d windows (batches of %d).",
        num_windows - num_windows % replicas,
        num_windows,
        replicas,
    )
    return dict(dataset_options, batch_size=replicas, drop_remainder=True)


def _training_data(config, workdir):
    """The train and validation stories, and the text preprocessor.

    Writes `skipped_stories.json`; raises when no stories of a split are left.
    """
    data = config.data
    splits, skip_logs = load_splits(data, os.path.join(workdir, DATA_DIR))
    _write_skip_report(skip_logs, os.path.join(workdir, SKIPPED_FILE))
    for split in ("train", "validation"):
        if not splits[split]:
            raise ValueError(
                f"No {split} stories are left ({sum(len(log) for log in skip_logs)} skipped, "
                f"see {os.path.join(workdir, SKIPPED_FILE)}); check data.path"
                + (" and data.validation_fraction." if split == "validation" else ".")
            )
    train_texts = [text for story in splits["train"] for text in story.texts]
    tokenizer = load_tokenizer(data.tokenizer, train_texts, data.vocabulary_size)
    preprocessor = StoryTextPreprocessor(
        tokenizer, data.sequence_length, data.decoder_sequence_length
    )
    return splits, preprocessor


def _compiled_models(config, workdir, splits, preprocessor, replicas):
    """Builds and compiles the model, in the distribution's scope.

    Returns `(model, fit_model, caches)`: `fit_model` is the model
    itself, or the trainer that fits its weights from the frozen image
    encoder's cached features; `caches` are the `feature_cache` and
    `text_cache` options of the datasets (None when not used).
    """
    model = build_story_model(config.model, config.data, preprocessor)
    fit_model, caches = model, {"feature_cache": None, "text_cache": None}
    stories = splits["train"] + splits["validation"]
    uses_text_cache = _uses_text_cache(config, model, _uses_feature_cache(config))
    if _uses_feature_cache(config):
        caches["feature_cache"] = build_feature_cache(
            stories,
            model.backbone,
            os.path.join(workdir, FEATURE_CACHE_DIR),
            batch_size=64 * replicas,
        )
        fit_model = CachedFeatureTrainer(model)
    if uses_text_cache:
        caches["text_cache"] = build_text_cache(
            stories,
            model.backbone,
            preprocessor,
            os.path.join(workdir, TEXT_CACHE_DIR),
            batch_size=256 * replicas,
        )
    fit_model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=config.train.learning_rate, weight_decay=config.train.weight_decay
        ),
        jit_compile=jit_compile_argument(config.train.jit_compile),
    )
    # Without a strategy, Keras builds a TensorFlow optimizer inside the
    # first traced train step, and a tf.function that creates variables is
    # traced twice: building it here saves that second trace (about a
    # third of a run's start-up on the tiny config).
    fit_model.optimizer.build(fit_model.trainable_variables)
    return model, fit_model, caches


def _batch_norm_recalibration(config, model, train_stories):
    """The callback that re-estimates a trained image encoder's batch-norm
    statistics before each validation; None when nothing needs it."""
    data = config.data
    if config.model.freeze_image_encoder or not config.train.batch_norm_recalibration_batches:
        return None
    return BatchNormRecalibration(
        model.backbone,
        FrameBatches(
            train_stories,
            data.image_size,
            data.batch_size * data.num_context_steps,
            config.train.batch_norm_recalibration_batches,
            seed=config.seed,
            resize=data.image_resize,
        ),
    )


def _load_best_weights(model, path):
    try:
        model.load_weights(path)
    except Exception as error:  # h5py and Keras raise many kinds for a damaged file.
        raise WorkdirStateError(
            f"{path}, the best checkpoint, cannot be read ({error_summary(error)}); it may "
            "be truncated or half-copied. "
            "Copy it again, or delete it and rerun the same command to save the last "
            "weights instead."
        ) from None


def _save_run(config, workdir, model, fit_model, scope, config_path):
    """The best weights into `model`, then `model.keras`, the loss curve,
    `train_provenance.json` and, in the log, the skipped stories."""
    best_weights = os.path.join(workdir, BEST_WEIGHTS_PATH)
    if config.train.early_stopping_patience and os.path.exists(best_weights):
        _load_best_weights(fit_model, best_weights)
    if fit_model is not model:
        # Saved with the optimizer state, as a model trained from images is.
        with scope():
            model.compile(
                optimizer=fit_model.optimizer,
                jit_compile=jit_compile_argument(config.train.jit_compile),
            )
    with atomic_path(os.path.join(workdir, MODEL_FILE)) as incoming:
        model.save(incoming)
    plot_loss_curve(os.path.join(workdir, HISTORY_FILE), os.path.join(workdir, LOSS_CURVE_FILE))
    write_json(os.path.join(workdir, TRAIN_PROVENANCE_FILE), provenance(config_path))
    with open(os.path.join(workdir, SKIPPED_FILE)) as file:
        logger.info("Skipped stories:\n%s", format_skip_report(json.load(file)))


def train(
    config,
    workdir,
    extra_callbacks=(),
    verbose="auto",
    coordinator_address=None,
    num_processes=None,
    process_id=None,
    config_path=None,
):
    """Trains `config` in `workdir`; re-running on the same workdir resumes.

    With a frozen image encoder, first builds (or reuses) the feature cache
    in `cache/` and trains from it (see `train.image_feature_cache`); with
    frozen text layers too, their states of each caption in `text_cache/`
    (see `train.text_feature_cache`).
    Writes `config.json`, `skipped_stories.json` (each story the readers
    refused, by id, with the reason), `backup/` (`TrainingStateBackup`),
    `checkpoints/best.weights.h5`, `history.csv`, TensorBoard `logs/`, the
    final `model.keras`, `loss_curve.png` and `train_provenance.json` (what
    trained it: command, commit, backend, machine). Each epoch's batches
    depend only on the seed and the epoch, so a resumed run sees the same
    batches as an uninterrupted one.

    Args:
        config: `Config`.
        workdir: str. The run's folder.
        extra_callbacks: more Keras callbacks, run after kstory's.
        verbose: Keras `fit` verbosity.
        coordinator_address, num_processes, process_id: multi-host JAX
            data parallelism (see `kstory.distribution`); else read
            from the environment.
        config_path: str. The config file, recorded in the provenance.

    Returns:
        The trained `StoryModel`.
    """
    with WorkdirLock(workdir, "train"):
        return _train(
            config,
            workdir,
            extra_callbacks,
            verbose,
            (coordinator_address, num_processes, process_id),
            config_path,
        )


def _train(config, workdir, extra_callbacks, verbose, cluster, config_path):
    check_workdir_config(config, workdir)
    data = config.data
    replicas, scope, shards = _distribution(config, *cluster)
    keras.utils.set_random_seed(config.seed)
    splits, preprocessor = _training_data(config, workdir)
    with scope():
        model, fit_model, caches = _compiled_models(config, workdir, splits, preprocessor, replicas)
    dataset_options = dict(
        pipeline_options(data, config.model.grounding_head),
        **caches,
        frame_keys=True,
        **shards,
    )
    validation_dataset = make_dataset(
        splits["validation"],
        preprocessor,
        **_validation_options(dataset_options, splits["validation"], data, replicas),
    )
    num_windows = len(story_windows(splits["train"], data.num_context_steps, data.window_mode))
    steps_per_epoch = num_windows // data.batch_size
    backup = TrainingStateBackup(
        os.path.join(workdir, BACKUP_DIR),
        steps_per_epoch,
        seed=config.seed,
        every_batches=config.train.backup_every_batches,
    )
    with scope():
        backup.restore(fit_model)
        # The config's rate, not the backed-up one: train.* may change on resume.
        fit_model.optimizer.learning_rate.assign(config.train.learning_rate)
    _rewrite_history_csv(os.path.join(workdir, HISTORY_FILE), backup.history)
    callbacks = _callbacks(config, workdir, backup) + list(extra_callbacks)
    recalibration = _batch_norm_recalibration(config, model, splits["train"])
    if recalibration is not None:
        # First: validation and every save after it see recalibrated statistics.
        callbacks.insert(0, recalibration)
    for first_epoch, epochs, first_step in _fit_phases(backup, config.train.epochs, workdir):
        train_dataset = make_train_stream(
            splits["train"],
            preprocessor,
            epochs=epochs,
            first_epoch=first_epoch,
            first_step=first_step,
            seed=config.seed,
            **dataset_options,
        )
        fit_model.fit(
            train_dataset,
            validation_data=validation_dataset,
            initial_epoch=first_epoch,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch - first_step,
            callbacks=callbacks,
            verbose=verbose,
        )
        if fit_model.stop_training:
            break
    _save_run(config, workdir, model, fit_model, scope, config_path)
    return model
