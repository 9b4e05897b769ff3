"""A counted, logged record of the stories a reader refused."""

import collections
import logging

logger = logging.getLogger("kstory.data")


def format_skip_report(report):
    """Text of `{source: SkipLog.to_json()}`: per source a count line, then each story.

    Example:
    >>> skips = SkipLog("fixture")
    >>> skips.skip("17", "too_few_frames", "3 frames, need 5")
    >>> print(format_skip_report({skips.source: skips.to_json()}))
    fixture: skipped 1 stories {'too_few_frames': 1}
      17: too_few_frames (3 frames, need 5)
    """
    lines = []
    for source, skipped in report.items():
        counts = skipped["counts"]
        lines.append(f"{source}: skipped {len(skipped['stories'])} stories {counts or ''}".rstrip())
        for entry in skipped["stories"]:
            detail = f" ({entry['detail']})" if entry["detail"] else ""
            lines.append(f"  {entry['story_id']}: {entry['reason']}{detail}")
    return "\n".join(lines)


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

    def to_json(self):
        """The counts and one record per skipped story, for a run's workdir."""
        return {
            "counts": self.counts(),
            "stories": [
                {"story_id": story_id, "reason": reason, "detail": detail}
                for story_id, reason, detail in self.entries
            ],
        }

    def summary(self):
        if not self.entries:
            return f"{self.source}: no stories skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts().items()))
        return f"{self.source}: skipped {len(self.entries)} stories ({parts})"
