"""The grounding head, its data, its loss and its scores (docs/grounding.md)."""

import logging
import math

import keras
import numpy as np
import pytest
from test_case import to_numpy

from conftest import build_tiny_model
from conftest import story_row
from kstory.data.entities import entity_slot
from kstory.data.entities import predicted_ids
from kstory.data.entities import presence
from kstory.data.entities import window_entities
from kstory.data.pipeline import make_dataset
from kstory.data.story import Story
from kstory.data.story_parser import parse_story_frames
from kstory.data.storyboard_generator import StoryboardGenerator
from kstory.evaluation.grounding_metrics import entity_scores
from kstory.evaluation.grounding_metrics import floor_windows
from kstory.layers.grounding_head import MASKED_LOGIT
from kstory.layers.grounding_head import GroundingHead

SLOTS = 2  # char1 char2 | obj1 obj2 | bg1 bg2, then new char / obj / bg
# Five frames; frame 2 tags two characters in one tag, frame 5 brings obj1
# (seen in frame 1) back and a new character, char3 (beyond the 2 slots).
TEXTS = [
    "<gdl bg1>In a room</gdl>, <gdo char1>Ann</gdo> holds <gdo obj1>a cup</gdo>.",
    "<gdl bg1>There</gdl>, <gdo char1 char2>Ann and Bob</gdo> talk.",
    "<gdo char2>Bob</gdo> <gda char2>leaves</gda>.",
    "<gdl bg2>Outside</gdl>, <gdo char2>Bob</gdo> waits.",
    "<gdo char2>Bob</gdo> drinks from <gdo obj1>the cup</gdo>; <gdo char3>Cy</gdo> comes.",
]


def _grounded_stories(tmp_path):
    from kstory.data.parquet_shards import write_shards
    from kstory.data.story_reasoning_reader import read_story_reasoning

    write_shards([story_row("s1", 5, texts=TEXTS)], str(tmp_path), "train")
    stories, skips = read_story_reasoning(str(tmp_path), "train")
    assert len(skips) == 0
    return stories


def _slot(entity_id):
    return entity_slot(entity_id, SLOTS)


def test_reader_to_windows_carries_entities_intact(tmp_path, tiny_preprocessor):
    stories = _grounded_stories(tmp_path)
    assert stories[0].entities == (
        ("bg1", "char1", "obj1"),
        ("bg1", "char1", "char2"),
        ("char2",),
        ("bg2", "char2"),
        ("char2", "obj1", "char3"),
    )
    dataset = make_dataset(
        stories, tiny_preprocessor, image_size=16, target_image_size=16, entity_slots=SLOTS
    )
    inputs, targets = next(iter(dataset))
    expected_context = np.zeros((4, 6), np.int32)
    for step, ids in enumerate(stories[0].entities[:4]):
        for entity_id in ids:
            expected_context[step, _slot(entity_id)] = 1
    np.testing.assert_array_equal(inputs["context_entities"].numpy()[0], expected_context)
    # Next frame: char2 and obj1, both seen (nameable); char3 is new.
    expected_target = np.zeros(9, np.float32)
    expected_target[[_slot("char2"), _slot("obj1")]] = 1
    expected_target[6] = 1  # new char
    np.testing.assert_array_equal(targets["next_entities"].numpy()[0], expected_target)
    # The loss counts the five seen slots (char1, char2, obj1, bg1, bg2) and
    # the three new-entity flags; obj2 was never seen.
    expected_mask = np.ones(9, np.float32)
    expected_mask[_slot("obj2")] = 0
    np.testing.assert_array_equal(targets["entity_mask"].numpy()[0], expected_mask)


def test_ids_without_a_slot_are_logged_not_dropped_silently(tmp_path, tiny_preprocessor, caplog):
    stories = _grounded_stories(tmp_path)
    with caplog.at_level(logging.WARNING, logger="kstory.data"):
        make_dataset(
            stories, tiny_preprocessor, image_size=16, target_image_size=16, entity_slots=2
        )
    assert "1 entity mentions have no grounding slot" in caplog.text
    assert "'char3' in story 's1'" in caplog.text


def test_stories_without_grounding_get_no_grounding_loss(
    embedded_stories, tiny_preprocessor, caplog
):
    vist_like = [Story(s.story_id, s.images, s.texts) for s in embedded_stories[:3]]
    with caplog.at_level(logging.INFO, logger="kstory.data"):
        dataset = make_dataset(
            vist_like, tiny_preprocessor, image_size=32, target_image_size=32, entity_slots=SLOTS
        )
    assert "has grounding tags (VIST has none): the grounding head gets no loss" in caplog.text
    for _, targets in dataset:
        assert targets["entity_mask"].numpy().sum() == 0


def test_entity_scores_match_a_hand_computed_example():
    windows = [
        # Nameable truth {obj1, obj2, bg1}; predicted {obj1, bg2}: 1 TP.
        # obj3 is new and its kind is flagged: found.
        {
            "predicted": {"obj1", "bg2"},
            "new_kinds": {"obj"},
            "truth": ("obj1", "obj2", "bg1", "obj3"),
            "context": {"obj1", "obj2", "bg1", "bg2"},
        },
        # Nameable truth {char1}; predicted {char1, obj1}: 1 TP. char2 is
        # new and no character is flagged: missed.
        {
            "predicted": {"char1", "obj1"},
            "new_kinds": {"bg"},
            "truth": ("char1", "char2"),
            "context": {"char1", "obj1"},
        },
    ]
    scores = entity_scores(windows)
    # 2 TP of 4 predicted and of 4 nameable true entities.
    assert scores["all"]["precision"] == pytest.approx(0.5)
    assert scores["all"]["recall"] == pytest.approx(0.5)
    assert scores["all"]["F1"] == pytest.approx(0.5)
    # Objects: TP obj1 (w1); predicted obj1, obj1; true obj1, obj2.
    assert scores["objects"]["precision"] == pytest.approx(1 / 2)
    assert scores["objects"]["recall"] == pytest.approx(1 / 2)
    # Characters: TP char1 of 1 predicted and 1 true.
    assert scores["characters"]["F1"] == pytest.approx(1.0)
    # Backgrounds: predicted bg2 (wrong), true bg1.
    assert scores["backgrounds"]["precision"] == 0 and scores["backgrounds"]["recall"] == 0
    assert scores["new_entities"] == 2
    assert scores["new_entity_recall"] == pytest.approx(0.5)


def test_floors_predict_the_last_frame_and_every_context_entity():
    frames = (("obj1", "bg1"), ("obj2", "bg1"), ("obj1", "bg2"), ("obj1", "bg2"), ("obj2", "bg1"))
    story = Story("s", (b"",) * 5, ("t",) * 5, frames)
    floors = floor_windows([story], [(0, 0)], 4)
    assert floors["last frame's entities"][0]["predicted"] == {"obj1", "bg2"}
    assert floors["every context entity"][0]["predicted"] == {"obj1", "obj2", "bg1", "bg2"}
    last = entity_scores(floors["last frame's entities"])
    union = entity_scores(floors["every context entity"])
    # Truth {obj2, bg1}: the last frame gets neither; the union both, plus two wrong.
    assert last["all"]["F1"] == 0
    assert union["all"]["precision"] == pytest.approx(0.5)
    assert union["all"]["recall"] == pytest.approx(1.0)
    assert last["new_entity_recall"] == union["new_entity_recall"] == 0


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


class TestGroundingHead:
    def test_shapes_masking_and_a_numpy_reference(self):
        keras.utils.set_random_seed(0)
        head = GroundingHead(slots=SLOTS, hidden_dim=8)
        rng = np.random.default_rng(0)
        states = rng.normal(size=(3, 4, 5)).astype("float32")
        caption = rng.normal(size=(3, 7)).astype("float32")
        context = (rng.random((3, 4, 6)) < 0.4).astype("int32")
        context[2] = 0  # A story with no grounding: only the new flags.
        logits = to_numpy(head(states, context, caption))
        assert logits.shape == (3, 9) and logits.dtype == np.float32
        # The reference, slot by slot: mean state of the steps showing it,
        # the last state and caption, its presence per step, its kind; one
        # shared MLP, plus copy_scale (2 at first) times +-1 for the last step.
        w1, b1 = to_numpy(head.hidden.kernel), to_numpy(head.hidden.bias)
        w2, b2 = to_numpy(head.slot_logit.kernel), to_numpy(head.slot_logit.bias)
        v1, c1 = to_numpy(head.new_hidden.kernel), to_numpy(head.new_hidden.bias)
        v2, c2 = to_numpy(head.new_logits.kernel), to_numpy(head.new_logits.bias)
        expected = np.zeros((3, 9))
        for b in range(3):
            story = np.concatenate([states[b, -1], caption[b]])
            for slot in range(6):
                shown = context[b, :, slot].astype(bool)
                content = states[b, shown].mean(axis=0) if shown.any() else np.zeros(5)
                kind = np.eye(3)[slot // SLOTS]
                x = np.concatenate([content, story, context[b, :, slot], kind])
                copy = 2.0 * (2 * context[b, -1, slot] - 1)
                expected[b, slot] = (_gelu(x @ w1 + b1) @ w2 + b2)[0] + copy
            expected[b, 6:] = _gelu(story @ v1 + c1) @ v2 + c2
        seen = np.concatenate([context.max(axis=1) > 0, np.ones((3, 3), bool)], axis=1)
        np.testing.assert_allclose(logits[seen], expected[seen], atol=1e-5, rtol=1e-5)
        assert (logits[~seen] == MASKED_LOGIT).all() and (~seen).sum() > 6
        # The entities are an input the head reads: other ones, other logits.
        # Here the same entities, in the other step order.
        other = to_numpy(head(states, context[:, ::-1], caption))
        slots = seen[0, :6]
        assert not np.allclose(other[0, :6][slots], logits[0, :6][slots], atol=1e-3)

    def test_predicted_ids_keep_only_seen_slots_above_half(self):
        context = np.zeros((4, 6), np.int32)
        context[:, _slot("obj1")] = context[0, _slot("bg1")] = 1
        probabilities = np.full(9, 0.9)
        probabilities[_slot("bg1")] = 0.2
        probabilities[6] = 0.1  # no new character
        assert predicted_ids(probabilities, context, SLOTS) == (["obj1"], ["obj", "bg"])


def _grounded_dataset(embedded_stories, tiny_preprocessor):
    return make_dataset(
        embedded_stories[:6],
        tiny_preprocessor,
        image_size=32,
        target_image_size=32,
        batch_size=4,
        entity_slots=3,
    )


def test_grounding_loss_is_its_own_term_of_compute_loss(embedded_stories, tiny_preprocessor):
    inputs, targets = to_numpy(next(iter(_grounded_dataset(embedded_stories, tiny_preprocessor))))
    assert targets["entity_mask"].sum() > 0
    model = build_tiny_model(
        tiny_preprocessor,
        data_overrides={"entity_slots": 3},
        grounding_head=True,
        grounding_loss_weight=2.0,
    )
    outputs = model(inputs)
    assert outputs["entity_logits"].shape == (4, 12)
    total = to_numpy(model.compute_loss(inputs, targets, outputs))
    grounding = float(to_numpy(model.grounding_loss_tracker.result()))
    # A NumPy reference: masked mean of binary cross-entropy from logits.
    logits = to_numpy(outputs["entity_logits"]).astype(np.float64)
    labels, mask = targets["next_entities"], targets["entity_mask"]
    losses = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    assert grounding == pytest.approx((losses * mask).sum() / mask.sum(), rel=1e-5)
    without = {k: v for k, v in targets.items() if k not in ("next_entities", "entity_mask")}
    rest = to_numpy(model.compute_loss(inputs, without, outputs))
    assert total - rest == pytest.approx(2.0 * grounding, rel=1e-4)
    # No grounding in the batch (VIST): the term is 0.
    empty = dict(targets, entity_mask=np.zeros_like(mask))
    assert to_numpy(model.compute_loss(inputs, empty, outputs)) == pytest.approx(rest, rel=1e-6)


def test_the_head_trains_and_round_trips(embedded_stories, tiny_preprocessor, tmp_path):
    dataset = _grounded_dataset(embedded_stories, tiny_preprocessor)
    model = build_tiny_model(
        tiny_preprocessor, data_overrides={"entity_slots": 3}, grounding_head=True
    )
    before = to_numpy(model.backbone.grounding.slot_logit.kernel)
    history = model.fit(dataset.take(3), epochs=1, verbose=0)
    assert "grounding_loss" in history.history
    assert not np.allclose(before, to_numpy(model.backbone.grounding.slot_logit.kernel))
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    inputs = to_numpy(next(iter(dataset))[0])
    np.testing.assert_allclose(
        to_numpy(restored.predict_next(inputs)["entity_logits"]),
        to_numpy(model.predict_next(inputs)["entity_logits"]),
        atol=1e-5,
    )


class TestEntityDynamics:
    @pytest.fixture(scope="class")
    def rows(self):
        return StoryboardGenerator(num_stories=80, image_size=16, seed=4).rows()

    def test_shapes_come_and_go_so_the_last_frame_is_a_floor(self, rows):
        windows = changed = new = 0
        for row in rows:
            entities = [ids for _, ids in parse_story_frames(row["story"])]
            for target in range(4, row["frame_count"]):
                windows += 1
                changed += set(entities[target]) != set(entities[target - 1])
                new += bool(set(entities[target]) - {i for f in entities[:target] for i in f})
        assert changed / windows > 0.4  # backgrounds change too
        assert new / windows > 0.05

    def test_a_newcomer_is_announced_untagged_the_frame_before(self, rows):
        arrivals = 0
        for row in rows:
            frames = parse_story_frames(row["story"])
            for frame in range(1, len(frames)):
                seen = {i for _, ids in frames[:frame] for i in ids}
                for entity_id in set(frames[frame][1]) - seen - {"bg1", "bg2", "bg3", "bg4", "bg5"}:
                    arrivals += 1
                    text, ids = frames[frame - 1]
                    assert " comes in next." in text and entity_id not in ids
        assert arrivals > 10

    def test_chain_of_thought_tables_list_each_frames_objects(self, rows):
        for row in rows[:20]:
            tables = row["chain_of_thought"].split("## Image ")[1:]
            for table, (_, ids) in zip(tables, parse_story_frames(row["story"])):
                listed = {
                    line.split("|")[1].strip() for line in table.splitlines() if "| obj" in line
                }
                assert listed == {i for i in ids if i.startswith("obj")}


def test_window_entities_and_presence_agree():
    frames = (("obj1", "bg1"), ("obj1",), ("obj2",), ("obj2",), ("obj2", "obj9"))
    context, target, mask = window_entities(frames, 0, 4, 3)
    np.testing.assert_array_equal(context[2], presence(("obj2",), 3))
    assert target[-2] == 1  # obj9 is new (and has no slot)
    assert mask[entity_slot("obj3", 3)] == 0 and mask[entity_slot("bg1", 3)] == 1


def test_serving_graph_reads_entity_strings_as_the_python_code():
    import tensorflow as tf

    from kstory.export.saved_model_export import entity_presence
    from kstory.export.saved_model_export import entity_text

    frames = [
        ["char1 obj2", "bg1  char2", "", "obj1 char9 lamp3 obj0 bgx"],
        ["bg2", "obj2 obj2", "char2 bg1 obj1", "char1"],
    ]
    graph = entity_presence(tf.constant(frames), SLOTS).numpy()
    expected = [[presence(frame.split(), SLOTS) for frame in story] for story in frames]
    np.testing.assert_array_equal(graph, np.array(expected, np.int32))
    probabilities = np.zeros((1, 9), np.float32)
    probabilities[0, [_slot("obj1"), _slot("bg2"), 7]] = 0.9
    probabilities[0, _slot("char1")] = 0.4
    assert entity_text(tf.constant(probabilities), SLOTS).numpy()[0] == b"obj1 bg2 +new obj"
