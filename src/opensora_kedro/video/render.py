"""Synthetic captioned clips: a shape of a known colour moving in a known direction.

The demo domain of the embedded default. Everything a caption says (colour, shape,
direction) can be measured back from the pixels, which the evaluation relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the schemas import torch, which this module does without
    from opensora_kedro.config.schemas.data import DemoDataParams

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (230, 220, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "purple": (150, 50, 210),
}
SHAPES = ("circle", "square", "triangle")
# Unit displacement over the whole clip, in (x, y) image coordinates (y grows downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "static": (0, 0),
}
BACKGROUND = (40, 40, 48)


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip deterministically."""

    name: str
    colour: str
    shape: str
    direction: str
    width: int
    height: int
    fps: float
    num_frames: int
    suffix: str = ".mp4"  # ".mp4" for clips, ".png" / ".jpg" for stills
    seed: int = 0
    # RGB at the top of the background (a faint gradient brightens it downwards); shots of a
    # multi-shot video differ in it so their cuts are clean. The default is every clip's.
    background: tuple[int, int, int] = BACKGROUND

    @property
    def caption(self) -> str:
        """The clip's caption, e.g. ``"a red circle moving left"``."""
        article = "an" if self.colour[0] in "aeiou" else "a"
        motion = "staying still" if self.direction == "static" else f"moving {self.direction}"
        return f"{article} {self.colour} {self.shape} {motion}"


def _shape_mask(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float):
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "triangle":  # pointing up, base at cy + r
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def object_path(spec: ClipSpec) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre positions (x, y) per frame and the radius of the moving shape.

    The shape travels half the frame along its direction over the clip and never
    leaves the frame.
    """
    rng = np.random.default_rng(spec.seed)
    radius = 0.15 * min(spec.width, spec.height)
    dir_x, dir_y = DIRECTIONS[spec.direction]
    progress = np.linspace(-0.5, 0.5, spec.num_frames) if spec.num_frames > 1 else np.zeros(1)
    # Along the motion axis the path spans the middle half; across it, a random lane.
    lane_x = rng.uniform(radius, spec.width - radius)
    lane_y = rng.uniform(radius, spec.height - radius)
    xs = (
        spec.width / 2 + dir_x * progress * spec.width / 2
        if dir_x
        else np.full_like(progress, lane_x)
    )
    ys = (
        spec.height / 2 + dir_y * progress * spec.height / 2
        if dir_y
        else np.full_like(progress, lane_y)
    )
    return xs, ys, radius


def render_frames(spec: ClipSpec) -> np.ndarray:
    """Render the clip as uint8 RGB frames, ``T x H x W x 3``."""
    ys_grid, xs_grid = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float32)
    # A faint static vertical gradient, so the background is not a flat colour.
    shade = (ys_grid / max(spec.height - 1, 1) * 24).astype(np.int16)[..., None]
    background = np.clip(np.array(spec.background, np.int16) + shade, 0, 255).astype(np.uint8)
    colour = np.array(COLOURS[spec.colour], np.uint8)
    xs, ys, radius = object_path(spec)
    frames = np.empty((spec.num_frames, spec.height, spec.width, 3), np.uint8)
    for index, (cx, cy) in enumerate(zip(xs, ys, strict=True)):
        frames[index] = background
        frames[index][_shape_mask(spec.shape, xs_grid, ys_grid, cx, cy, radius)] = colour
    return frames


def render_shot_sequence(specs: list[ClipSpec]) -> np.ndarray:
    """Render several clips one after the other, ``sum(T) x H x W x 3``: a multi-shot video
    whose cuts lie exactly at the clips' boundaries. Every spec must have the same size."""
    sizes = {(spec.width, spec.height) for spec in specs}
    if len(sizes) != 1:
        raise ValueError(f"shots of one video need one size, got {sorted(sizes)}")
    return np.concatenate([render_frames(spec) for spec in specs])


# Backgrounds of the shots of a multi-shot video: each cut changes the whole frame.
SHOT_BACKGROUNDS = ((40, 40, 48), (200, 200, 210), (60, 120, 70), (150, 90, 60))


@dataclass(frozen=True)
class MultiShotSpec:
    """A video of several shots one after the other, and no caption (as uncut footage)."""

    name: str
    shots: tuple[ClipSpec, ...]
    suffix: str = ".mp4"

    @property
    def fps(self) -> float:
        return self.shots[0].fps


def plan_multishot_videos(params: DemoDataParams) -> list[MultiShotSpec]:
    """``multishot.count`` videos of ``multishot.shots`` shots (at most one per background of
    :data:`SHOT_BACKGROUNDS`) of ``multishot.frames`` frames each, at the first size and frame
    rate: at every cut another colour, shape and direction on another background;
    deterministic by ``seed``."""
    shots, frames, seed = params.multishot.shots, params.multishot.frames, params.seed
    size, fps = params.sizes[0], params.fps[0]
    rng = np.random.default_rng(seed)
    videos = []
    for index in range(params.multishot.count):
        colours = rng.choice(list(COLOURS), size=shots, replace=False)
        specs = tuple(
            ClipSpec(
                name=f"multishot_{index:04d}_{k}", colour=str(colour),
                shape=SHAPES[int(rng.integers(len(SHAPES)))],
                direction=list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS) - 1))],  # moving
                width=size[0], height=size[1], fps=fps, num_frames=frames,
                seed=seed * 100_003 + index * 17 + k,
                background=SHOT_BACKGROUNDS[(index + k) % len(SHOT_BACKGROUNDS)],
            )
            for k, colour in enumerate(colours)
        )  # fmt: skip
        videos.append(MultiShotSpec(name=f"multishot_{index:04d}", shots=specs))
    return videos


def is_held_out(colour: str, shape: str, direction: str, every: int) -> bool:
    """Whether the demo never renders this (colour, shape, direction) combination.

    With ``every = k`` one combination in ``k`` is held out: those whose palette indices sum to
    a multiple of ``k``. Every colour, shape and direction, and every pair of them, still
    occurs in the clips, so a held-out combination is a new composition of known parts: what
    the evaluation asks for as "unseen". ``every = 0`` holds out nothing.
    """
    if every <= 0:
        return False
    total = list(COLOURS).index(colour) + SHAPES.index(shape) + list(DIRECTIONS).index(direction)
    return total % every == 0


def _combinations(held_out_every: int, moving: bool) -> list[tuple[str, str, str]]:
    """The rendered combinations in a balanced cycle: colour, shape and direction advance
    together (the order clip ``i`` had before any was held out), held-out ones skipped."""
    colours, directions = list(COLOURS), list(DIRECTIONS)
    count = len(colours) * len(SHAPES) * len(directions)
    cycle = []
    for index in range(count):
        combo = (colours[index % len(colours)], SHAPES[(index // len(colours)) % len(SHAPES)],
                 directions[index % len(directions)] if moving else "static")  # fmt: skip
        if not is_held_out(*combo, held_out_every) and combo not in cycle:
            cycle.append(combo)
    return cycle


def plan_demo_clips(params: DemoDataParams) -> list[ClipSpec]:
    """Choose ``num_clips`` videos and ``num_images`` stills, deterministically by seed.

    Colours, shapes and directions are cycled so every rendered combination appears as
    evenly as the count allows, skipping the combinations :func:`is_held_out` keeps for the
    evaluation (``held_out_every``); sizes, fps and lengths are drawn at random from their
    choices, with the first clips pinned to the extremes of ``lengths`` so both always occur.
    """
    num_clips, num_images, seed = params.num_clips, params.num_images, params.seed
    sizes, fps_choices, lengths, held_out_every = (
        params.sizes, params.fps, params.lengths, params.held_out_every
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    cycles = {moving: _combinations(held_out_every, moving) for moving in (True, False)}
    specs = []
    for index in range(num_clips + num_images):
        is_image = index >= num_clips
        width, height = sizes[int(rng.integers(len(sizes)))]
        if is_image:
            num_frames, fps = 1, 0.0
            suffix = (".png", ".jpg")[(index - num_clips) % 2]
        else:
            # One clip each of the extreme lengths; the rest avoid single frames, which
            # carry no motion.
            moving = [length for length in lengths if length > 1] or lengths
            pinned = {0: min(lengths), 1: max(lengths)}
            num_frames = pinned.get(index, int(moving[int(rng.integers(len(moving)))]))
            fps = float(fps_choices[int(rng.integers(len(fps_choices)))])
            suffix = ".mp4"
        # One frame cannot show motion, so its caption must not claim any.
        cycle = cycles[num_frames > 1]
        colour, shape, direction = cycle[index % len(cycle)]
        specs.append(
            ClipSpec(
                name=f"demo_{index:04d}",
                colour=colour,
                shape=shape,
                direction=direction,
                width=int(width),
                height=int(height),
                fps=fps,
                num_frames=num_frames,
                suffix=suffix,
                seed=seed * 100_003 + index,
            )
        )
    return specs
