"""A counted, logged record of the stories a reader refused."""

import collections
import logging

logger = logging.getLogger("kstory.data")


class SkipLog:
    """Counts skipped stories by reason and logs one line per story.

    Readers never drop a story silently: each refusal goes through `skip`,
    which logs a warning naming the story and the reason, and keeps the count
    that `summary` reports.

    Args:
        source: str. A name for the data source, used in log lines.

    Example:
    >>> skips = SkipLog("fixture")
    >>> skips.skip("17", "too_few_frames", "3 frames, need 5")
    >>> skips.counts()
    {'too_few_frames': 1}
    """

    def __init__(self, source):
        self.source = source
        self.entries = []

    def skip(self, story_id, reason, detail=""):
        self.entries.append((story_id, reason, detail))
        logger.warning(
            "%s: skipped story %r (%s)%s",
            self.source,
            story_id,
            reason,
            f": {detail}" if detail else "",
        )

    def counts(self):
        return dict(collections.Counter(reason for _, reason, _ in self.entries))

    def story_ids(self, reason=None):
        return [
            story_id
            for story_id, entry_reason, _ in self.entries
            if reason is None or entry_reason == reason
        ]

    def __len__(self):
        return len(self.entries)

    def summary(self):
        if not self.entries:
            return f"{self.source}: no stories skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts().items()))
        return f"{self.source}: skipped {len(self.entries)} stories ({parts})"
