"""The in-memory record of one visual story."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Story:
    """One story: an ordered list of frames, each an encoded image and its text.

    Readers return `Story` records whatever the source (embedded storyboards,
    StoryReasoning parquet, VIST JSON), so that windowing and the tf.data
    pipeline see one shape of data.

    Args:
        story_id: str. The source's identifier for the story.
        images: tuple of bytes. The encoded image (PNG, JPEG, ...) of each
            frame, in story order.
        texts: tuple of str. The plain text of each frame, tags stripped,
            aligned with `images`.
        entities: tuple of tuples of str. The grounded entity ids (`char1`,
            `obj2`, `bg1`) mentioned in each frame; empty tuples when the
            source has no grounding.
    """

    story_id: str
    images: tuple
    texts: tuple
    entities: tuple = ()

    def __post_init__(self):
        if len(self.images) != len(self.texts):
            raise ValueError(
                f"Story {self.story_id!r} has {len(self.images)} images but "
                f"{len(self.texts)} texts; they must be aligned one to one."
            )
        if self.entities and len(self.entities) != len(self.texts):
            raise ValueError(
                f"Story {self.story_id!r} has {len(self.entities)} entity lists "
                f"for {len(self.texts)} frames."
            )

    @property
    def num_frames(self):
        return len(self.images)
