"""Reading the demo domain back from pixels: the shape's colour and its direction of motion."""

from __future__ import annotations

import numpy as np

from opensora_kedro.video.render import COLOURS

# The background is grey; the shapes are saturated. A pixel whose channels spread
# by more than this belongs to the shape.
SATURATION_THRESHOLD = 60
# A centroid that moves less than this fraction of the short side counts as static.
STATIC_FRACTION = 0.05


def shape_mask(frames: np.ndarray) -> np.ndarray:
    """Boolean ``T x H x W`` mask of the saturated (shape) pixels of RGB ``frames``."""
    spread = frames.max(axis=-1).astype(np.int16) - frames.min(axis=-1).astype(np.int16)
    return spread > SATURATION_THRESHOLD


def dominant_colour(frames: np.ndarray) -> str | None:
    """Name of the palette colour nearest the mean shape colour, or None if no shape is seen."""
    mask = shape_mask(frames)
    if not mask.any():
        return None
    mean = frames[mask].astype(np.float64).mean(axis=0)
    names = list(COLOURS)
    palette = np.array([COLOURS[name] for name in names], np.float64)
    return names[int(np.argmin(((palette - mean) ** 2).sum(axis=1)))]


def motion_direction(frames: np.ndarray) -> str | None:
    """``left/right/up/down/static`` from the shape's centroid, first to last frame with a shape."""
    mask = shape_mask(frames)
    seen = [index for index in range(len(frames)) if mask[index].any()]
    if not seen:
        return None
    first, last = (np.argwhere(mask[index]).mean(axis=0) for index in (seen[0], seen[-1]))
    dy, dx = last - first
    if max(abs(dx), abs(dy)) < STATIC_FRACTION * min(frames.shape[1:3]):
        return "static"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"
