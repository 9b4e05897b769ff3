"""The checks every reader applies before a story becomes a `Story`."""

import concurrent.futures

from kstory.data.image_check import image_problem
from kstory.data.story import Story


def admit_stories(candidates, skips, min_frames=5, validate_images=True, num_threads=8):
    """Turns candidate stories into `Story` records, skipping the broken ones.

    A candidate is skipped, with a log line and a count in `skips`, when its
    id repeats an earlier one, when it has fewer than `min_frames` frames, or
    when any frame's image does not decode. Admitted stories keep their order.

    Args:
        candidates: iterable of dicts with keys `story_id`, `images`,
            `texts` and `entities`, the lists already aligned by frame.
        skips: `SkipLog`. Receives every refusal.
        min_frames: int. Fewest frames a story needs (4 context + 1 target).
        validate_images: bool. Decode every image once to catch corrupt
            bytes here instead of mid-epoch.
        num_threads: int. Threads that decode images (PIL releases the GIL).

    Returns:
        A list of `Story`.
    """
    seen_ids = set()
    kept = []
    for candidate in candidates:
        story_id = candidate["story_id"]
        if story_id in seen_ids:
            skips.skip(story_id, "duplicate_id", "an earlier story has the same id")
            continue
        seen_ids.add(story_id)
        if len(candidate["images"]) < min_frames:
            skips.skip(
                story_id,
                "too_few_frames",
                f"{len(candidate['images'])} frames, need at least {min_frames}",
            )
            continue
        kept.append(candidate)
    if validate_images:
        with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
            problems = [list(pool.map(image_problem, c["images"])) for c in kept]
    else:
        problems = [[None] * len(c["images"]) for c in kept]
    stories = []
    for candidate, frame_problems in zip(kept, problems):
        bad = [(i + 1, p) for i, p in enumerate(frame_problems) if p is not None]
        if bad:
            detail = "; ".join(f"frame {frame}: {problem}" for frame, problem in bad)
            skips.skip(candidate["story_id"], "bad_image", detail)
            continue
        stories.append(
            Story(
                story_id=candidate["story_id"],
                images=tuple(candidate["images"]),
                texts=tuple(candidate["texts"]),
                entities=tuple(candidate["entities"]),
            )
        )
    return stories
