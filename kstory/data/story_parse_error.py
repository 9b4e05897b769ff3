"""The typed error of the story parser."""


class StoryParseError(ValueError):
    """A story string that cannot be split into aligned frames.

    Args:
        reason: str. A short machine-readable code (`no_frames`,
            `frame_numbering`, `malformed_tags`, `empty_text`, `not_utf8`,
            `not_text`), used to count skips by kind.
        message: str. A readable explanation naming the offending frame.
    """

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
