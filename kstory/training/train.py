"""Trains a `StoryModel` into a workdir, resuming an interrupted run."""

import contextlib
import json
import logging
import os

import keras

from kstory.config import config_from_dict
from kstory.config import config_to_dict
from kstory.data.feature_cache import build_feature_cache
from kstory.data.pipeline import make_dataset
from kstory.data.pipeline import pipeline_options
from kstory.data.sources import load_splits
from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.data.tokenizer_loading import load_tokenizer
from kstory.data.windows import story_windows
from kstory.models.builders import build_story_model
from kstory.training.cached_feature_trainer import CachedFeatureTrainer
from kstory.training.distribution import data_parallel
from kstory.training.loss_curve import plot_loss_curve
from kstory.training.seed_state_backup import SeedStateBackup

logger = logging.getLogger("kstory.train")

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"


def check_workdir_config(config, workdir):
    """Writes the config into a new workdir; refuses another run's workdir.

    A workdir holds one run. Re-running with the same config resumes it; a
    different architecture or data there would silently mix two runs.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    values = config_to_dict(config)
    if os.path.exists(path):
        with open(path) as file:
            previous = json.load(file)
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
    with open(path, "w") as file:
        json.dump(values, file, indent=2)


def load_workdir_config(workdir):
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{workdir} has no {CONFIG_FILE}; is it a kstory workdir?")
    with open(path) as file:
        return config_from_dict(json.load(file))


def _first_epoch(backup_dir):
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as file:
        return int(json.load(file)["epoch"])


def _callbacks(config, workdir):
    backup_dir = os.path.join(workdir, "backup")
    save_freq = config.train.backup_every_batches or "epoch"
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir, save_freq=save_freq, delete_checkpoint=False),
        SeedStateBackup(backup_dir, seed=config.seed, save_freq=save_freq),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            os.path.join(workdir, "checkpoints", "best.weights.h5"),
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "logs"), write_graph=False),
    ]
    if config.train.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=config.train.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    return callbacks


def _uses_feature_cache(config):
    setting, frozen = config.train.image_feature_cache, config.model.freeze_image_encoder
    if setting == "true" and not frozen:
        raise ValueError(
            "train.image_feature_cache=true needs a frozen image encoder "
            "(model.freeze_image_encoder=True)."
        )
    return setting == "true" or (setting == "auto" and frozen)


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
    logger.info("Data parallel: %s, %d replicas of %d windows each.", setup.engine,
                setup.num_replicas, batch_size // setup.num_replicas)
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
    logger.info("Validation on %d of %d windows (batches of %d).",
                num_windows - num_windows % replicas, num_windows, replicas)
    return dict(dataset_options, batch_size=replicas, drop_remainder=True)


def train(config, workdir, extra_callbacks=(), verbose="auto", coordinator_address=None,
          num_processes=None, process_id=None):
    """Trains `config` in `workdir`; re-running on the same workdir resumes.

    With a frozen image encoder, first builds (or reuses) the feature cache
    in `cache/` and trains from it (see `train.image_feature_cache`).
    Writes `config.json`, `backup/` (BackupAndRestore), `checkpoints/best.weights.h5`,
    `history.csv`, TensorBoard `logs/`, the final `model.keras` and
    `loss_curve.png`. Each epoch's batches depend only on the seed and the
    epoch, so a resumed run sees the same batches as an uninterrupted one.

    Args:
        config: `Config`.
        workdir: str. The run's folder.
        extra_callbacks: more Keras callbacks, run after kstory's.
        verbose: Keras `fit` verbosity.
        coordinator_address, num_processes, process_id: multi-host JAX
            data parallelism (see `kstory.training.distribution`); else read
            from the environment.

    Returns:
        The trained `StoryModel`.
    """
    check_workdir_config(config, workdir)
    data = config.data
    replicas, scope, shards = _distribution(config, coordinator_address, num_processes,
                                            process_id)
    keras.utils.set_random_seed(config.seed)
    splits, skip_logs = load_splits(data, os.path.join(workdir, "data"))
    for log in skip_logs:
        logger.info(log.summary())
    train_texts = [text for story in splits["train"] for text in story.texts]
    tokenizer = load_tokenizer(data.tokenizer, train_texts, data.vocabulary_size)
    preprocessor = StoryTextPreprocessor(
        tokenizer, data.sequence_length, data.decoder_sequence_length
    )
    with scope():
        model = build_story_model(config.model, data, preprocessor)
        # `fit_model` is the model itself, or the trainer that fits its
        # weights from the frozen image encoder's cached features.
        fit_model, feature_cache = model, None
        if _uses_feature_cache(config):
            feature_cache = build_feature_cache(
                splits["train"] + splits["validation"],
                model.backbone,
                os.path.join(workdir, "cache", "image_features"),
                batch_size=64 * replicas,
            )
            fit_model = CachedFeatureTrainer(model)
        jit_compile = {"auto": "auto", "true": True, "false": False}[config.train.jit_compile]
        fit_model.compile(
            optimizer=keras.optimizers.AdamW(
                learning_rate=config.train.learning_rate, weight_decay=config.train.weight_decay
            ),
            jit_compile=jit_compile,
        )
    first_epoch = _first_epoch(os.path.join(workdir, "backup"))
    dataset_options = dict(pipeline_options(data), feature_cache=feature_cache, **shards)
    train_dataset = make_dataset(
        splits["train"], preprocessor, shuffle=True, seed=config.seed,
        epochs=config.train.epochs, first_epoch=first_epoch, **dataset_options,
    )
    validation_dataset = make_dataset(
        splits["validation"], preprocessor,
        **_validation_options(dataset_options, splits["validation"], data, replicas),
    )
    num_windows = len(story_windows(splits["train"], data.num_context_steps, data.window_mode))
    if first_epoch:
        logger.info("Resuming %s from epoch %d", workdir, first_epoch)
    fit_model.fit(
        train_dataset,
        validation_data=validation_dataset,
        epochs=config.train.epochs,
        steps_per_epoch=num_windows // data.batch_size,
        callbacks=_callbacks(config, workdir) + list(extra_callbacks),
        verbose=verbose,
    )
    if fit_model is not model:
        # Saved with the optimizer state, as a model trained from images is.
        with scope():
            model.compile(optimizer=fit_model.optimizer, jit_compile=jit_compile)
    model.save(os.path.join(workdir, MODEL_FILE))
    plot_loss_curve(os.path.join(workdir, "history.csv"), os.path.join(workdir, "loss_curve.png"))
    return model
