"""Entity precision, recall and F1 of the next frame, and new-entity recall."""

from kstory.data.entities import ENTITY_KINDS
from kstory.data.entities import KIND_NAMES
from kstory.data.entities import entity_kind


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else 0.0


def _prf(true_positives, predicted, actual):
    precision, recall = _ratio(true_positives, predicted), _ratio(true_positives, actual)
    return {
        "precision": precision,
        "recall": recall,
        "F1": _ratio(2 * precision * recall, precision + recall),
        "true": actual,
        "predicted": predicted,
    }


def entity_scores(windows):
    """Micro-averaged entity scores over windows.

    An entity of the next frame that some context frame shows is
    *nameable*: precision, recall and F1 count those (true positives summed
    over windows, then divided), overall and per kind. An entity the context
    never showed is *new*: no id can name it, so it is scored apart, by
    new-entity recall: the share of new entities whose kind the prediction
    flags as having a newcomer.

    Args:
        windows: iterable of dicts with `predicted` (ids), `new_kinds`
            (kinds flagged new), `truth` (the next frame's ids) and `context`
            (the ids of the context frames).

    Returns:
        dict: `all` and each kind present (`characters`, `objects`,
        `backgrounds`), each `{precision, recall, F1, true, predicted}`;
        `new_entity_recall` and `new_entities` (their count).

    Example:
    >>> scores = entity_scores([{"predicted": {"obj1", "bg1"}, "new_kinds": set(),
    ...     "truth": ("obj1", "obj2", "bg2"), "context": {"obj1", "obj2", "bg1"}}])
    >>> round(scores["all"]["precision"], 3), round(scores["all"]["recall"], 3)
    (0.5, 0.5)
    >>> scores["new_entities"], scores["new_entity_recall"]
    (1, 0.0)
    """
    counts = {kind: [0, 0, 0] for kind in ("all", *ENTITY_KINDS)}
    new_total = new_found = 0
    for window in windows:
        predicted, context = set(window["predicted"]), set(window["context"])
        truth = set(window["truth"])
        nameable = truth & context
        for entity_id in truth - context:
            new_total += 1
            new_found += entity_kind(entity_id) in window["new_kinds"]
        for kind in counts:

            def of_kind(ids, kind=kind):
                return {i for i in ids if kind == "all" or entity_kind(i) == kind}

            kind_predicted, kind_true = of_kind(predicted), of_kind(nameable)
            counts[kind][0] += len(kind_predicted & kind_true)
            counts[kind][1] += len(kind_predicted)
            counts[kind][2] += len(kind_true)
    scores = {"all": _prf(*counts["all"])}
    for kind in ENTITY_KINDS:
        if counts[kind][1] or counts[kind][2]:
            scores[KIND_NAMES[kind]] = _prf(*counts[kind])
    scores["new_entities"] = new_total
    scores["new_entity_recall"] = _ratio(new_found, new_total)
    return scores


def floor_windows(stories, windows, num_context_steps):
    """The grounding floors' predictions, per window: the last context
    frame's entities, and every entity the context shows.

    Returns:
        dict of floor name -> list of window dicts for `entity_scores`.
    """
    floors = {"last frame's entities": [], "every context entity": []}
    for story_index, start in windows:
        frames = stories[story_index].entities
        context = {i for frame in frames[start : start + num_context_steps] for i in frame}
        truth = frames[start + num_context_steps]
        last = set(frames[start + num_context_steps - 1])
        base = {"new_kinds": set(), "truth": truth, "context": context}
        floors["last frame's entities"].append(dict(base, predicted=last))
        floors["every context entity"].append(dict(base, predicted=set(context)))
    return floors
