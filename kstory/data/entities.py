"""Grounded entities as fixed slots: what the grounding head reads and predicts.

StoryReasoning's entity ids are local to a story: `char1` is the first
character of *this* story, not of any other. So kstory gives each entity kind
(`ENTITY_KINDS`) `slots` numbered slots, and an id takes the slot of its kind
and number: with 8 slots, `char3` is slot 2 and `obj1` is slot 8. A window's
context is then a presence matrix `(steps, num_slots)`, and what the head
predicts is, per slot, whether that entity is in the next frame, plus one
"new entity" flag per kind for entities the context never showed (they
cannot be named by id). See docs/grounding.md.
"""

import re

import numpy as np

ENTITY_KINDS = ("char", "obj", "bg")
KIND_NAMES = {"char": "characters", "obj": "objects", "bg": "backgrounds"}
_ENTITY_ID = re.compile(r"^(char|obj|bg)([1-9][0-9]*)$")


def num_entity_slots(slots):
    """The slots of a presence vector: `slots` per kind."""
    return len(ENTITY_KINDS) * slots


def num_entity_outputs(slots):
    """The grounding head's outputs: every slot, then a new-entity flag per kind."""
    return num_entity_slots(slots) + len(ENTITY_KINDS)


def entity_slot(entity_id, slots):
    """The slot of an entity id, or None when the id has no slot (an unknown
    kind, or a number above `slots`).

    Example:
    >>> entity_slot("char3", 8), entity_slot("obj1", 8), entity_slot("bg9", 8)
    (2, 8, None)
    """
    match = _ENTITY_ID.match(entity_id)
    if match is None:
        return None
    number = int(match.group(2))
    if number > slots:
        return None
    return ENTITY_KINDS.index(match.group(1)) * slots + number - 1


def slot_names(slots):
    """Every output's name: the slots' entity ids, then `new char`, `new obj`, ...

    Example:
    >>> slot_names(1)
    ['char1', 'obj1', 'bg1', 'new char', 'new obj', 'new bg']
    """
    ids = [f"{kind}{number}" for kind in ENTITY_KINDS for number in range(1, slots + 1)]
    return ids + [f"new {kind}" for kind in ENTITY_KINDS]


def entity_kind(entity_id):
    """The kind of an entity id (`"char"`, `"obj"`, `"bg"`), or None."""
    match = _ENTITY_ID.match(entity_id)
    return match.group(1) if match else None


def presence(entity_ids, slots):
    """A frame's entity ids -> float32 presence over the slots; ids without a
    slot are left out (`unslotted` counts them)."""
    vector = np.zeros(num_entity_slots(slots), np.float32)
    for entity_id in entity_ids:
        slot = entity_slot(entity_id, slots)
        if slot is not None:
            vector[slot] = 1.0
    return vector


def unslotted(entity_ids, slots):
    """The ids of a frame that no slot holds."""
    return [entity_id for entity_id in entity_ids if entity_slot(entity_id, slots) is None]


def window_entities(story_entities, start, num_context_steps, slots):
    """One window's grounding arrays.

    Args:
        story_entities: the story's `Story.entities` (a tuple of id tuples per
            frame; empty when the source has no grounding).
        start: int. The window's first frame.
        num_context_steps: int.
        slots: int. Slots per kind.

    Returns:
        `(context, target, mask)`: float32 presence `(steps, num_slots)` of the
        context frames; the target `(num_outputs,)`: the next frame's
        presence in every slot seen in the context, then per kind whether an
        entity the context never showed appears; and the loss `mask`
        `(num_outputs,)`: 1 for the slots seen in the context and the
        new-entity flags, all 0 when the story has no grounding.

    Example:
    >>> frames = (("obj1",), ("obj1", "obj2"), ("obj2",), ("obj2",), ("obj1", "obj3"))
    >>> context, target, mask = window_entities(frames, 0, 4, 3)
    >>> context[:, 3:6].tolist()
    [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    >>> target[3:6].tolist(), mask[3:6].tolist(), target[-3:].tolist()
    ([1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0])
    """
    num_slots = num_entity_slots(slots)
    num_outputs = num_entity_outputs(slots)
    context = np.zeros((num_context_steps, num_slots), np.float32)
    target = np.zeros(num_outputs, np.float32)
    mask = np.zeros(num_outputs, np.float32)
    if not story_entities:
        return context, target, mask
    for step in range(num_context_steps):
        context[step] = presence(story_entities[start + step], slots)
    seen = context.max(axis=0)
    next_ids = story_entities[start + num_context_steps]
    target[:num_slots] = presence(next_ids, slots) * seen
    new_kinds = {entity_kind(i) for i in new_entities(story_entities, start, num_context_steps)}
    for kind_index, kind in enumerate(ENTITY_KINDS):
        target[num_slots + kind_index] = float(kind in new_kinds)
    mask[:num_slots] = seen
    mask[num_slots:] = 1.0
    return context, target, mask


def new_entities(story_entities, start, num_context_steps):
    """The ids of a window's next frame that none of its context frames has."""
    seen = {i for frame in story_entities[start : start + num_context_steps] for i in frame}
    return [i for i in story_entities[start + num_context_steps] if i not in seen]


def entity_probabilities(logits):
    """The grounding head's logits -> presence probabilities (masked slots 0)."""
    return 1 / (1 + np.exp(-np.clip(np.asarray(logits, np.float64), -60, 60)))


def predicted_ids(probabilities, context, slots, threshold=0.5):
    """The grounding head's probabilities -> the ids it predicts, and the kinds
    for which it predicts a new entity.

    Only slots seen in the context can be predicted (the head masks the rest).

    Args:
        probabilities: `(num_outputs,)` sigmoid of `entity_logits`.
        context: `(steps, num_slots)` the context's presence.
        slots: int. Slots per kind.
        threshold: float.

    Returns:
        `(ids, new_kinds)`: lists of str.
    """
    names = slot_names(slots)
    num_slots = num_entity_slots(slots)
    seen = np.asarray(context).max(axis=0) > 0
    chosen = np.asarray(probabilities) > threshold
    ids = [names[i] for i in range(num_slots) if chosen[i] and seen[i]]
    new_kinds = [kind for k, kind in enumerate(ENTITY_KINDS) if chosen[num_slots + k]]
    return ids, new_kinds


def entities_line(ids, new_kinds):
    """Predicted entities as one line, as the CLI, the storyboards and the
    SavedModel's `serving_default` write them.

    Example:
    >>> entities_line(["obj1", "bg2"], ["obj"])
    'obj1 bg2 +new obj'
    """
    return " ".join([*ids, *(f"+new {kind}" for kind in new_kinds)])
