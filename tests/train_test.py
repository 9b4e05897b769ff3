import json
import os
import shutil

import keras
import numpy as np
import pytest

from kstory.config import apply_overrides
from kstory.config import load_config
from kstory.evaluation.evaluate import evaluate
from kstory.evaluation.predict import predict
from kstory.training.train import train

# Tests sharing a module fixture stay on one xdist worker (make test).
pytestmark = pytest.mark.xdist_group("train")

SMOKE = ["data.num_stories=14", "train.epochs=2", "train.early_stopping_patience=0"]


# Session-scoped: xdist may run other modules' tests between this group's, which
# would tear a module fixture down and train it again.
@pytest.fixture(scope="session")
def smoke_config(repo_root):
    return apply_overrides(load_config(f"{repo_root}/configs/tiny.py", smoke=True), SMOKE)


class Interrupt(Exception):
    pass


class InterruptAfterBatch(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise Interrupt(f"stopped after batch {batch}")


class OptimizerStateAtTrainBegin(keras.callbacks.Callback):
    """Records whether the optimizer's state exists when `fit` begins."""

    def __init__(self):
        super().__init__()
        self.built = []

    def on_train_begin(self, logs=None):
        self.built.append(self.model.optimizer.built)


def _history(workdir):
    with open(os.path.join(workdir, "history.csv")) as file:
        header, *rows = file.read().strip().splitlines()
    return header, [[float(value) for value in row.split(",")] for row in rows]


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


@pytest.fixture(scope="session")
def trained(smoke_config, tmp_path_factory):
    """One uninterrupted smoke run: its workdir and the trained model."""
    workdir = str(tmp_path_factory.mktemp("straight") / "run")
    return workdir, train(smoke_config, workdir, verbose=0)


def test_train_evaluate_predict(trained, tmp_path):
    workdir, _ = trained
    for name in (
        "config.json",
        "model.keras",
        "history.csv",
        "loss_curve.png",
        "checkpoints/best.weights.h5",
        "backup/latest/state.json",
    ):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "logs"))
    with open(os.path.join(workdir, "history.csv")) as file:
        header, *rows = file.read().strip().splitlines()
    assert len(rows) == 2 and "val_text_loss" in header and "contrastive_loss" in header

    metrics = evaluate(workdir, "test", storyboards=2)
    assert set(metrics["text"]) == {"model", "copy last caption", "nearest training context"}
    assert set(metrics["image"]) == {"model", "copy last frame", "mean training image"}
    for scores in metrics["text"].values():
        assert {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} <= set(scores)
    assert metrics["retrieval"]["frames"] > 0
    assert json.load(open(os.path.join(workdir, "metrics.json")))["windows"] == metrics["windows"]
    assert "| copy last caption |" in open(os.path.join(workdir, "metrics.md")).read()
    # The grounding head's scores, beside its floors, on the same windows.
    grounding = metrics["grounding"]
    assert set(grounding) == {"model", "last frame's entities", "every context entity"}
    assert grounding["model"]["all"]["true"] == grounding["every context entity"]["all"]["true"]
    assert grounding["every context entity"]["all"]["recall"] == 1.0
    assert "### Next frame's entities" in open(os.path.join(workdir, "metrics.md")).read()

    # The storyboards draw the scored predictions of each story's first
    # window: the frame and caption that `predict` gives for it.
    from PIL import Image

    assert len(metrics["storyboards"]) == 2
    story_id = os.path.basename(metrics["storyboards"][0]).removesuffix("_storyboard.png")
    result = predict(workdir, story_id)
    assert os.path.exists(result["image_path"]) and os.path.exists(result["storyboard_path"])
    assert isinstance(result["caption"], str)
    drawn = np.asarray(Image.open(metrics["storyboards"][0].replace("_storyboard", "_next")))
    predicted = np.asarray(Image.open(result["image_path"]))
    assert np.abs(drawn.astype(int) - predicted.astype(int)).max() <= 1
    assert result["caption"] == metrics["examples"][0]["prediction"]  # both of window 0

    # A new story from a folder of frames and captions.txt, with no truth.
    folder = tmp_path / "new_story"
    folder.mkdir()
    for index in range(4):
        Image.new("RGB", (40, 30), (60 * index, 80, 120)).save(folder / f"frame_{index}.png")
    (folder / "captions.txt").write_text("\n".join(f"The red circle moves {i}." for i in range(4)))
    result = predict(workdir, str(folder))
    assert Image.open(result["image_path"]).size == (32, 32)
    assert os.path.exists(result["storyboard_path"])


def test_interrupted_run_resumes_mid_epoch_to_the_uninterrupted_result(
    smoke_config, trained, tmp_path
):
    # In-process on every backend; tests/training_state_backup_test.py kills a
    # real `kstory train` process. Backing up every batch does not change the
    # run's arithmetic, only how often it is saved.
    straight_dir, straight = trained
    config = apply_overrides(smoke_config, ["train.backup_every_batches=1"])
    interrupted_dir = str(tmp_path / "interrupted")
    optimizer_state = OptimizerStateAtTrainBegin()
    with pytest.raises(Interrupt):
        train(
            config,
            interrupted_dir,
            extra_callbacks=[InterruptAfterBatch(2), optimizer_state],
            verbose=0,
        )
    # Built before the first step: without a strategy, TensorFlow would build
    # it inside the traced step and trace the step twice.
    assert optimizer_state.built == [True]
    state = json.load(open(os.path.join(interrupted_dir, "backup", "latest", "state.json")))
    assert (state["epoch"], state["step"]) == (0, 3)
    # As if a kill fell between an epoch's log row and its backup: the resumed
    # run keeps only the rows the backup knows.
    with open(os.path.join(interrupted_dir, "history.csv"), "a") as file:
        file.write("0,1.0,1.0,1.0,1.0,1.0,1.0,1.0,1.0\n")
    resumed = train(config, interrupted_dir, verbose=0)
    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy())
    # Bitwise on CPU: the same batches, random draws and kernels, across the
    # interruption. So the same seed and config give the same run, too.
    for actual, expected in zip(_weights(resumed), _weights(straight)):
        np.testing.assert_array_equal(actual, expected)
    # One row per epoch, the interrupted epoch's means carried over the resume.
    header, rows = _history(interrupted_dir)
    straight_header, straight_rows = _history(straight_dir)
    assert header == straight_header and len(rows) == 2
    np.testing.assert_allclose(rows, straight_rows, rtol=1e-5)


def test_a_finished_run_reruns_as_is_and_a_nan_stops_it_with_one_clear_line(
    repo_root, smoke_config, trained, tmp_path, capsys
):
    from kstory.cli import main
    from kstory.training.training_state_backup import read_backup

    straight_dir, straight = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(straight_dir, workdir)
    # Re-running a finished run trains nothing and changes nothing.
    again = train(smoke_config, workdir, verbose=0)
    for actual, expected in zip(_weights(again), _weights(straight)):
        np.testing.assert_array_equal(actual, expected)
    assert _history(workdir) == _history(straight_dir)
    # The 2-epoch run, resumed for a third epoch at a rate that overflows the weights.
    code = main(
        [
            "train",
            "--config",
            f"{repo_root}/configs/tiny.py",
            "--smoke",
            "--workdir",
            workdir,
            *(f"--set={item}" for item in SMOKE),
            "--set",
            "train.epochs=3",
            "--set",
            "train.learning_rate=1e30",
        ]
    )
    assert code == 1
    error_lines = capsys.readouterr().err.strip().splitlines()
    failures = [line for line in error_lines if line.startswith("kstory train: failed:")]
    assert len(failures) == 1, error_lines
    assert "at epoch 3" in failures[0] and "Lower train.learning_rate" in failures[0]
    assert "loss=nan" in failures[0] or "loss=inf" in failures[0]

    # The last good backup, checkpoint and model are whole and finite.
    folder, state = read_backup(os.path.join(workdir, "backup"))
    assert (state["epoch"], state["step"], len(state["history"])) == (2, 0, 2)
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    for weights in (
        os.path.join(workdir, "checkpoints", "best.weights.h5"),
        os.path.join(folder, "model.weights.h5"),
    ):
        model.load_weights(weights)
        assert all(np.isfinite(array).all() for array in _weights(model)), weights
    assert _history(workdir) == _history(straight_dir)


# The cache path's equivalence to image-fed training runs on every backend in
# feature_cache_test; this is the train() glue around it, run once.
@pytest.mark.single_backend
def test_frozen_encoder_trains_from_the_feature_cache_and_resumes(
    smoke_config, tmp_path, monkeypatch
):
    from kstory.data import feature_cache
    from kstory.data import text_cache

    builds = []
    for module, name in ((feature_cache, "_write_arrays"), (text_cache, "_write_states")):
        write = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *args, name=name, write=write: builds.append(name) or write(*args)
        )
    overrides = ["model.freeze_image_encoder=true", "train.backup_every_batches=1"]
    with pytest.raises(ValueError, match="train.text_feature_cache=true needs frozen text"):
        train(
            apply_overrides(
                smoke_config,
                [*overrides, "model.num_frozen_text_layers=0", "train.text_feature_cache=true"],
            ),
            str(tmp_path / "refused"),
        )
    # Both caches: the image encoder's, and the lower text layer's.
    config = apply_overrides(smoke_config, [*overrides, "model.num_frozen_text_layers=1"])
    workdir = str(tmp_path / "run")
    with pytest.raises(Interrupt):
        train(config, workdir, extra_callbacks=[InterruptAfterBatch(2)], verbose=0)
    model = train(config, workdir, verbose=0)
    assert builds == ["_write_arrays", "_write_states"]  # The resumed run reused both.
    infos = {}
    for cache in ("image_features", "text_states"):
        (cache_dir,) = os.listdir(os.path.join(workdir, "cache", cache))
        infos[cache] = json.load(
            open(os.path.join(workdir, "cache", cache, cache_dir, "cache.json"))
        )
    info = infos["image_features"]
    assert info["num_frames"] <= info["num_story_frames"]
    assert 0 < infos["text_states"]["num_captions"] <= infos["text_states"]["num_story_captions"]
    assert int(model.optimizer.iterations.numpy()) > 0
    with open(os.path.join(workdir, "history.csv")) as file:
        assert len(file.read().strip().splitlines()) == 1 + 2

    # The saved model reads images, with the optimizer state it trained with.
    restored = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    assert int(restored.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    assert evaluate(workdir, "test")["retrieval"]["frames"] > 0


def test_workdir_of_another_architecture_is_refused(smoke_config, tmp_path):
    from kstory.training.train import check_workdir_config

    check_workdir_config(smoke_config, str(tmp_path))
    other = apply_overrides(smoke_config, ["model.temporal_model=transformer"])
    with pytest.raises(ValueError, match="model.temporal_model"):
        check_workdir_config(other, str(tmp_path))
    # Training settings may change on resume (e.g. more epochs), but not what
    # the checkpoints hold.
    check_workdir_config(apply_overrides(smoke_config, ["train.epochs=5"]), str(tmp_path))
    with pytest.raises(ValueError, match="train.image_feature_cache"):
        check_workdir_config(
            apply_overrides(smoke_config, ["train.image_feature_cache=false"]), str(tmp_path)
        )


def test_evaluate_needs_a_trained_workdir(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        evaluate(str(tmp_path))


# Backend-independent CLI glue; `make test` runs it in the torch pass only.
@pytest.mark.single_backend
def test_train_then_evaluate_in_one_process_scores_as_kstory_evaluate(
    repo_root, trained, tmp_path, capsys
):
    from kstory.cli import main

    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    report = tmp_path / "metrics.md"
    # A finished run trains nothing; then the returned model is scored.
    argv = ["train", "--config", f"{repo_root}/configs/tiny.py", "--smoke", "--workdir", workdir]
    argv += [*(f"--set={item}" for item in SMOKE), "--evaluate", "--report", str(report)]
    argv += ["--storyboards", "1"]
    assert main(argv) == 0
    in_process = json.load(open(os.path.join(workdir, "metrics.json")))
    assert "| copy last caption |" in capsys.readouterr().out
    text = report.read_text()
    assert "Produced by:" in text and "The model was trained by:" in text
    assert "| copy last caption |" in text and len(in_process["storyboards"]) == 1
    # The same figures as scoring the saved model in a separate `kstory evaluate`.
    assert main(["evaluate", "--workdir", workdir, "--storyboards", "0"]) == 0
    reloaded = json.load(open(os.path.join(workdir, "metrics.json")))
    assert in_process["text"] == reloaded["text"]
    for name, scores in reloaded["image"].items():
        for metric, value in scores.items():
            np.testing.assert_allclose(in_process["image"][name][metric], value, rtol=1e-5)


# Backend-independent glue over train() and evaluate(), which run on every
# backend above; `make test` runs these in the torch pass only, to save time.
# Which variants train by default, and with which settings (no training):
@pytest.mark.single_backend
def test_ablation_by_default_trains_every_variant_that_changes_the_config(
    smoke_config, tmp_path, monkeypatch
):
    from kstory.evaluation import ablation

    trained_configs = {}

    def record(config, workdir, verbose):
        trained_configs[os.path.basename(workdir)] = config.model

    monkeypatch.setattr(ablation, "train", record)
    monkeypatch.setattr(ablation, "evaluate", lambda workdir, split: os.path.basename(workdir))
    results = ablation.run_ablation(smoke_config, str(tmp_path))
    assert results == {
        "full": "full",
        "no contrastive": "no_contrastive",
        "no bag-of-words": "no_bag_of_words",
        "captions only": "captions_only",
        "images only": "images_only",
    }
    assert trained_configs["full"] == smoke_config.model
    saved = trained_configs
    assert saved["no_contrastive"].contrastive_loss_weight == 0.0
    assert saved["no_bag_of_words"].bag_of_words_loss_weight == 0.0
    assert saved["captions_only"].modalities == "captions"
    assert not saved["captions_only"].image_decoder_residual
    assert saved["images_only"].modalities == "images"
    # Each changes only its own settings.
    bag_of_words_weight = smoke_config.model.bag_of_words_loss_weight
    assert saved["images_only"].bag_of_words_loss_weight == bag_of_words_weight
    # A variant that would train the full config again is left out.
    no_bag = apply_overrides(smoke_config, ["model.bag_of_words_loss_weight=0"])
    assert "no bag-of-words" not in ablation.run_ablation(no_bag, str(tmp_path / "no_bag"))


# Two variants train for real (the full run is the trained one); the default
# list is the test above.
@pytest.mark.single_backend
def test_ablation_writes_a_comparison(smoke_config, trained, tmp_path):
    from kstory.evaluation.ablation import format_ablation
    from kstory.evaluation.ablation import run_ablation

    # The full run is the trained one: it resumes as finished.
    config = smoke_config
    shutil.copytree(trained[0], tmp_path / "full")
    variants = ["full", "no contrastive", "captions only"]
    results = run_ablation(config, str(tmp_path), variants=variants)
    assert list(results) == variants
    saved = {
        name: json.load(open(tmp_path / name / "config.json"))["model"]
        for name in ("no_contrastive", "captions_only")
    }
    assert saved["no_contrastive"]["contrastive_loss_weight"] == 0.0
    assert saved["captions_only"]["modalities"] == "captions"
    table = format_ablation(results)
    assert "| no contrastive (contrastive_loss_weight=0.0) |" in table
    assert "| captions only (modalities=captions" in table
    assert "floor: copy last caption / frame" in table
    # Each run's input reliance, from its own evaluation.
    drop = results["full"]["input_reliance"]["verdicts"][0]
    assert (drop["output"], drop["shuffled"]) == ("caption", "images")
    assert "| caption drop, images shuffled | image drop, captions shuffled |" in table
    full_row = next(line for line in table.splitlines() if line.startswith("| full |"))
    assert f"| {drop['relative_drop']:+.1%} |" in full_row
    # The grounding head's entity F1 beside each run's other scores, and its floors.
    assert "| text_to_image_R@5 | entity F1 | caption drop" in table
    assert f"| {results['full']['grounding']['model']['all']['F1']:.4f} | " in full_row
    every_entity = results["full"]["grounding"]["every context entity"]["all"]["F1"]
    assert (
        f"| floor: every context entity | – | – | – | – | – | – | – | – | – | {every_entity:.4f} |"
        in table
    )
    # A variant that changes nothing is refused, by name.
    no_bag = apply_overrides(config, ["model.bag_of_words_loss_weight=0"])
    with pytest.raises(ValueError, match=r"\['no bag-of-words'\] would train the full config"):
        run_ablation(no_bag, str(tmp_path / "y"), variants=["full", "no bag-of-words"])
    with pytest.raises(ValueError, match="contrastive_loss_weight > 0"):
        run_ablation(
            apply_overrides(config, ["model.contrastive_loss_weight=0"]), str(tmp_path / "x")
        )


def _reliance_runs(trained, modalities):
    from kstory.data.sources import load_splits
    from kstory.evaluation.evaluate import run_model
    from kstory.workdir import load_workdir_config

    workdir, model = trained
    config = load_workdir_config(workdir)
    splits, _ = load_splits(config.data, os.path.join(workdir, "data"))
    stories = splits["train"][:6]
    return [run_model(model, stories, config.data, shuffle=shuffle) for shuffle in modalities]


def test_the_trained_model_looks(trained):
    """A trained run's image path works in inference mode.

    - The image embeddings of different frames differ (they are equal to 1e-6
      when the encoder's batch-norm statistics are stale).
    - Shuffling the context images across windows moves the story state.

    Whether each output reads each modality is tested on the mechanism
    (story_model_test) and, after learning, by `kstory check-claims` on the
    `make demo` run (.ci/run).
    """
    from kstory.evaluation.evaluate import mean_pairwise_cosine
    from kstory.evaluation.input_reliance import story_state_change

    as_is, images_shuffled = _reliance_runs(trained, (None, "images"))
    embeddings = as_is["image_embeddings"].reshape(-1, as_is["image_embeddings"].shape[-1])
    spread = embeddings.std(axis=0).mean() / np.abs(embeddings).mean()
    assert spread > 0.05, spread
    assert mean_pairwise_cosine(embeddings) < 0.95
    assert story_state_change(as_is["story_state"], images_shuffled["story_state"]) > 0.05
