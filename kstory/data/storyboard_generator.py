"""Generates the embedded visual-story dataset: moving shapes on a background."""

import io

import numpy as np
from PIL import Image
from PIL import ImageDraw

BACKGROUNDS = {
    "field": (118, 172, 96),
    "sky": (156, 196, 236),
    "beach": (232, 214, 170),
    "night": (34, 36, 74),
    "room": (196, 190, 184),
}
# The colour-change behaviour steps through this cycle, so the next colour is
# predictable from the last two frames.
COLOUR_CYCLE = ("red", "orange", "yellow", "green", "blue", "purple")
COLOURS = {
    "red": (214, 40, 40),
    "orange": (244, 140, 30),
    "yellow": (246, 222, 48),
    "green": (30, 140, 60),
    "blue": (40, 80, 220),
    "purple": (136, 50, 180),
}
SHAPES = ("circle", "square", "triangle")
BEHAVIOURS = ("moves", "bounces", "grows", "changes colour")
_MIN_RADIUS, _MAX_RADIUS = 0.06, 0.2
_GRAVITY = 0.03
# Shapes that move cover about half a grid cell per frame, so which cell they
# reach, and when they hit a wall, depends on where exactly they are: what
# the frames show, not what the coarse "at the top left" of a text says.
_MIN_SPEED, _MAX_SPEED = 0.12, 0.2
# Chance that the scene moves to another background at the next frame. The
# change is random, so only the text that announces it can foretell it.
_SCENE_CHANGE_PROBABILITY = 0.5
# The signal lamp: a square in the top-left corner that no text names. When
# it is dark, every shape waits through the next frame; when lit, they go on.
# It is drawn at random per frame, so only the frame shows it.
_LAMP_LIT, _LAMP_DARK = (255, 255, 255), (0, 0, 0)
_LAMP_SIZE = 0.14
_WAIT_PROBABILITY = 0.5
_SUPERSAMPLE = 4
# Comings and goings (`entity_dynamics`): the chance that a story has a
# peeker (in every other frame) and a visitor (in for `_VISIT_LENGTH`
# frames from a frame up to `_LATEST_ARRIVAL`, then gone).
_PEEKER_PROBABILITY = 0.5
_VISITOR_PROBABILITY = 0.6
_VISIT_LENGTH = 3
_LATEST_ARRIVAL = 5


def _size_word(radius):
    if radius < 0.1:
        return "small"
    if radius < 0.15:
        return "medium"
    return "large"


def _region(x, y):
    row = ("top", "", "bottom")[min(int(y * 3), 2)]
    column = ("left", "", "right")[min(int(x * 3), 2)]
    return " ".join(part for part in (row, column) if part) or "center"


def _direction(dx, dy):
    vertical = "up" if dy < 0 else "down" if dy > 0 else ""
    horizontal = "left" if dx < 0 else "right" if dx > 0 else ""
    return " and ".join(part for part in (vertical, horizontal) if part)


def _present(state, frame):
    """Whether a shape is in frame number `frame` (from 0)."""
    visibility = state.get("visibility", "stays")
    if visibility == "peeks":
        return frame % 2 == state["phase"]
    if visibility == "visits":
        return state["arrive"] <= frame < state["arrive"] + _VISIT_LENGTH
    return True


def _reflect(position, velocity, low, high):
    """Moves one coordinate and bounces it off [low, high]; says which wall."""
    position = position + velocity
    if position < low:
        return 2 * low - position, -velocity, "low"
    if position > high:
        return 2 * high - position, -velocity, "high"
    return position, velocity, None


class StoryboardGenerator:
    """Deterministic storyboards of coloured shapes, in StoryReasoning's layout.

    Each story has one to `max_objects` shapes on a background. Every shape
    follows one behaviour for the whole story: it moves in a straight line and
    bounces off the walls, bounces under gravity, grows and shrinks, or steps
    through a fixed colour cycle. Each frame's text says, for every shape,
    which it is, what it does and where. The dynamics are constant, so frame 5
    follows from frames 1-4, yet it always differs from frame 4: copying the
    last frame or caption is a floor a model can beat.

    Predicting the next frame needs both modalities (docs/data.md):
    - only the frames show the signal lamp, a square in the top-left corner
      that no text names: lit, the shapes go on; dark (at random, half of the
      frames), every shape waits through the next frame ("waits");
    - only the frames show where exactly a shape is (a text names one of nine
      grid cells), which decides the next cell, size word and wall bounce;
    - only the text tells what the next scene is: between frames the story
      moves to a random other background half of the time, and the frame
      before says so ("Next comes the beach.").

    With `entity_dynamics`, shapes also enter and leave, so that "the same
    entities as the last frame" is a floor to beat (docs/grounding.md): a
    story may have a peeker, in every other frame, and a visitor, who comes
    in once, announced by the frame before ("A small red circle comes in
    next.", untagged: it is not in that frame), and leaves after three
    frames. The lamp stops motion, not comings and goings. Which shapes the
    next frame holds thus follows from the context: their presence so far
    and the announcement.

    Rows carry the columns of the StoryReasoning parquet (`story_id`,
    `images`, `frame_count`, `chain_of_thought`, `story`), with per-frame text
    in `<gdi imageN>` blocks and `<gdo>`, `<gda>`, `<gdl>` grounding tags.

    Args:
        num_stories: int. Number of stories.
        min_frames: int. Fewest frames in a story.
        max_frames: int. Most frames in a story.
        image_size: int. Side of the square frames, in pixels.
        max_objects: int. Most shapes that stay in the scene (at least
            one); with `entity_dynamics`, a peeker and a visitor may join.
        entity_dynamics: bool. Shapes enter and leave (see above); False
            keeps every shape in every frame.
        seed: int. Story `i` depends only on `(seed, i)`.

    Example:
    >>> rows = StoryboardGenerator(num_stories=2, image_size=32, seed=1).rows()
    >>> rows[0]["frame_count"] == len(rows[0]["images"])
    True
    """

    def __init__(
        self,
        num_stories=300,
        min_frames=5,
        max_frames=8,
        image_size=64,
        max_objects=3,
        seed=0,
        entity_dynamics=True,
    ):
        if not 1 <= min_frames <= max_frames:
            raise ValueError(
                f"Need 1 <= min_frames <= max_frames; got min_frames={min_frames}, "
                f"max_frames={max_frames}."
            )
        if max_objects < 1:
            raise ValueError(f"max_objects must be at least 1; got {max_objects}.")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels; got {image_size}.")
        self.num_stories = num_stories
        self.min_frames = min_frames
        self.max_frames = max_frames
        self.image_size = image_size
        self.max_objects = max_objects
        self.seed = seed
        self.entity_dynamics = entity_dynamics

    def rows(self):
        return [self.story_row(index) for index in range(self.num_stories)]

    def story_row(self, index):
        rng = np.random.default_rng([self.seed, index])
        num_frames = int(rng.integers(self.min_frames, self.max_frames + 1))
        objects = [
            self._new_object(rng, object_index)
            for object_index in range(int(rng.integers(1, self.max_objects + 1)))
        ]
        backgrounds = self._scenes(rng, num_frames)
        lamps_lit = [bool(rng.random() >= _WAIT_PROBABILITY) for _ in range(num_frames)]
        if self.entity_dynamics:
            objects += self._comings_and_goings(rng, len(objects))
        # Grounding ids: bg1 is the story's first background, bg2 its second, ...
        background_ids = {}
        for background in backgrounds:
            background_ids.setdefault(background, f"bg{len(background_ids) + 1}")
        frames = self._simulate(objects, lamps_lit)
        story_id = str(index)
        images, blocks, thoughts = [], [], []
        for frame, states in enumerate(frames):
            shown = [state for state in states if state["present"]]
            background = backgrounds[frame]
            following = frames[frame + 1] if frame + 1 < num_frames else []
            arrivals = [s for s in following if s["present"] and s["arrives"]]
            next_background = backgrounds[frame + 1] if frame + 1 < num_frames else background
            images.append(
                {
                    "bytes": self._draw(background, shown, lamps_lit[frame]),
                    "path": f"{story_id}/{frame + 1}.png",
                }
            )
            blocks.append(
                self._frame_story(
                    frame,
                    background,
                    background_ids[background],
                    shown,
                    next_background if next_background != background else None,
                    arrivals,
                )
            )
            thoughts.append(
                self._frame_thought(frame, background, background_ids[background], shown)
            )
        return {
            "story_id": story_id,
            "images": images,
            "frame_count": num_frames,
            "chain_of_thought": "\n\n".join(thoughts),
            "story": "\n".join(blocks),
        }

    def _comings_and_goings(self, rng, num_objects):
        """The shapes that are not always in the frame: a peeker, in every
        other frame, and a visitor, who comes in once (announced the frame
        before) and leaves after `_VISIT_LENGTH` frames. The lamp does not
        hold them: it stops motion, not comings and goings."""
        extras = []
        if rng.random() < _PEEKER_PROBABILITY:
            peeker = self._new_object(rng, num_objects + len(extras))
            extras.append(dict(peeker, visibility="peeks", phase=int(rng.integers(2))))
        if rng.random() < _VISITOR_PROBABILITY:
            visitor = self._new_object(rng, num_objects + len(extras))
            arrive = int(rng.integers(1, _LATEST_ARRIVAL + 1))
            extras.append(dict(visitor, visibility="visits", arrive=arrive))
        return extras

    def _simulate(self, objects, lamps_lit):
        """Every frame's object states, absent objects included."""
        states = [dict(spec, event=None, waits=False) for spec in objects]
        frames = []
        for frame in range(len(lamps_lit)):
            if frame:
                if lamps_lit[frame - 1]:
                    states = [self._step(state) for state in states]
                else:
                    states = [dict(state, event=None, waits=True) for state in states]
            present = [_present(state, frame) for state in states]
            seen_before = [
                any(before[i]["present"] for before in frames) for i in range(len(states))
            ]
            frames.append(
                [
                    dict(state, present=shown, arrives=shown and not seen and frame > 0)
                    for state, shown, seen in zip(states, present, seen_before)
                ]
            )
        return frames

    def _scenes(self, rng, num_frames):
        """Each frame's background: the last one, or at random another."""
        names = list(BACKGROUNDS)
        backgrounds = [str(rng.choice(names))]
        for _ in range(num_frames - 1):
            current = backgrounds[-1]
            if rng.random() < _SCENE_CHANGE_PROBABILITY:
                current = str(rng.choice([name for name in names if name != current]))
            backgrounds.append(current)
        return backgrounds

    def _new_object(self, rng, object_index):
        behaviour = BEHAVIOURS[int(rng.integers(len(BEHAVIOURS)))]
        radius = float(rng.uniform(0.08, 0.13))
        margin = _MAX_RADIUS if behaviour == "grows" else radius
        spec = {
            "id": f"obj{object_index + 1}",
            "shape": SHAPES[int(rng.integers(len(SHAPES)))],
            "colour": int(rng.integers(len(COLOUR_CYCLE))),
            "behaviour": behaviour,
            "radius": radius,
            "x": float(rng.uniform(margin, 1 - margin)),
            "y": float(rng.uniform(margin, 1 - margin)),
            "vx": 0.0,
            "vy": 0.0,
            "growth": 0.0,
        }
        if behaviour == "moves":
            while spec["vx"] == 0 and spec["vy"] == 0:
                speed = rng.uniform(_MIN_SPEED, _MAX_SPEED)
                spec["vx"] = float(rng.integers(-1, 2) * speed)
                spec["vy"] = float(rng.integers(-1, 2) * speed)
        elif behaviour == "bounces":
            spec["y"] = float(rng.uniform(radius, 0.5))
            spec["vy"] = float(rng.uniform(-0.05, 0.05))
        elif behaviour == "grows":
            spec["growth"] = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.018, 0.03))
        return spec

    def _step(self, state):
        """The object one frame on, by its fixed rule."""
        state = dict(state, event=None, waits=False)
        behaviour, radius = state["behaviour"], state["radius"]
        if behaviour == "moves":
            state["x"], state["vx"], wall_x = _reflect(state["x"], state["vx"], radius, 1 - radius)
            state["y"], state["vy"], wall_y = _reflect(state["y"], state["vy"], radius, 1 - radius)
            walls = {"low": "the left wall", "high": "the right wall"}.get(wall_x) or {
                "low": "the top",
                "high": "the bottom",
            }.get(wall_y)
            state["event"] = walls
        elif behaviour == "bounces":
            state["vy"] = state["vy"] + _GRAVITY
            state["y"], state["vy"], floor = _reflect(state["y"], state["vy"], radius, 1 - radius)
            state["event"] = "the ground" if floor == "high" else None
        elif behaviour == "grows":
            state["radius"], state["growth"], _ = _reflect(
                radius, state["growth"], _MIN_RADIUS, _MAX_RADIUS
            )
        else:
            state["colour"] = (state["colour"] + 1) % len(COLOUR_CYCLE)
        return state

    def _action(self, state):
        if state["waits"]:
            return "waits"
        behaviour = state["behaviour"]
        if behaviour == "moves":
            if state["event"]:
                return f"bounces off {state['event']}"
            return f"moves {_direction(state['vx'], state['vy'])}"
        if behaviour == "bounces":
            if state["event"]:
                return "hits the ground"
            return "falls" if state["vy"] > 0 else "rises"
        if behaviour == "grows":
            return "grows" if state["growth"] > 0 else "shrinks"
        return f"turns {COLOUR_CYCLE[state['colour']]}"

    def _noun(self, state):
        colour = COLOUR_CYCLE[state["colour"]]
        return f"the {_size_word(state['radius'])} {colour} {state['shape']}"

    def _frame_story(
        self, frame, background, background_id, states, next_background=None, arrivals=()
    ):
        clauses = [
            f"<gdo {state['id']}>{self._noun(state)}</gdo> "
            f"<gda {state['id']}>{self._action(state)}</gda> at the "
            f"{_region(state['x'], state['y'])}"
            for state in states
        ]
        text = f"<gdl {background_id}>In the {background}</gdl>, " + "; ".join(clauses) + "."
        for state in arrivals:
            # Untagged: the newcomer is not in this frame (nor its entities).
            text += f" A {self._noun(state)[4:]} comes in next."
        if next_background is not None:
            text += f" Next comes the {next_background}."
        return f"<gdi image{frame + 1}>\n{text}\n</gdi>"

    def _frame_thought(self, frame, background, background_id, states):
        lines = [
            f"## Image {frame + 1}",
            "### Objects",
            "| Object ID | Description | Action | Location |",
            "|---|---|---|---|",
        ]
        for state in states:
            lines.append(
                f"| {state['id']} | {self._noun(state)[4:]} | {self._action(state)} | "
                f"{_region(state['x'], state['y'])} |"
            )
        lines += ["### Setting", f"| {background_id} | {background} |"]
        return "\n".join(lines)

    def _draw(self, background, states, lamp_lit):
        side = self.image_size * _SUPERSAMPLE
        canvas = Image.new("RGB", (side, side), BACKGROUNDS[background])
        draw = ImageDraw.Draw(canvas)
        for state in states:
            x, y, r = state["x"] * side, state["y"] * side, state["radius"] * side
            fill = COLOURS[COLOUR_CYCLE[state["colour"]]]
            if state["shape"] == "circle":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
            elif state["shape"] == "square":
                draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
            else:
                draw.polygon(((x, y - r), (x + r, y + r), (x - r, y + r)), fill=fill)
        lamp = _LAMP_SIZE * side
        draw.rectangle((0, 0, lamp, lamp), fill=_LAMP_LIT if lamp_lit else _LAMP_DARK)
        # Each pixel the mean of its supersampled block: exact coverage
        # anti-aliasing, and far cheaper than a Lanczos resize.
        canvas = canvas.reduce(_SUPERSAMPLE)
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG")
        return buffer.getvalue()
