"""libvmaf's motion feature in plain numpy, one frame pair at a time: the reference the
streaming kernel of :mod:`opensora_kedro.video.motion` must agree with bit for bit."""

from __future__ import annotations

import numpy as np

from opensora_kedro.video.motion import MotionConfig, motion2_from_motion
from opensora_kedro.video.motion_kernel import FLOAT_TAPS, INTEGER_TAPS, EdgeRule, mirror_index


def blur_integer(plane: np.ndarray, edge_rule: EdgeRule = "3.2") -> np.ndarray:
    """libvmaf's integer blur of one plane (or a stack ``... x H x W``), as int64.

    Works on signed input too (the 3.2 rule blurs frame differences); ``>>`` floors, as
    the C code's arithmetic shift does.
    """
    data = np.asarray(plane, dtype=np.int64)
    height, width = data.shape[-2:]
    rows = data[..., mirror_index(height, edge_rule), :]
    taps = np.array(INTEGER_TAPS, np.int64)
    vertical = sum(taps[k] * rows[..., k : k + height, :] for k in range(5))
    vertical = (vertical + 128) >> 8
    cols = vertical[..., mirror_index(width, edge_rule)]
    horizontal = sum(taps[k] * cols[..., k : k + width] for k in range(5))
    return (horizontal + 32768) >> 16


def blur_float(plane: np.ndarray, edge_rule: EdgeRule = "3.2") -> np.ndarray:
    """libvmaf's float blur (``float_motion``) of ``Y - 128``, as float32."""
    data = np.asarray(plane, dtype=np.float32) - np.float32(128)
    height, width = data.shape[-2:]
    rows = data[..., mirror_index(height, edge_rule), :]
    taps = np.array(FLOAT_TAPS, np.float32)
    vertical = sum(taps[k] * rows[..., k : k + height, :] for k in range(5))
    cols = vertical[..., mirror_index(width, edge_rule)]
    return sum(taps[k] * cols[..., k : k + width] for k in range(5)).astype(np.float32)


def normalise_sad(sad: float, height: int, width: int, config: MotionConfig) -> float:
    """A frame's SAD as libvmaf reports it: the integer SAD over 256 and the pixel count
    (in double for 3.2, through a float32 cast for 3.1); the float SAD over the pixel count
    in float32."""
    if config.variant == "float":
        return float(np.float32(np.float32(sad) / np.float32(height * width)))
    if config.edge_rule == "3.1":
        return float(np.float32(np.float32(sad / 256.0) / np.float32(height * width)))
    return sad / 256.0 / (height * width)


def frame_motion(previous: np.ndarray, current: np.ndarray, config: MotionConfig) -> float:
    """libvmaf's per-frame ``motion`` between two ``H x W`` luma planes (plain numpy)."""
    previous, current = np.asarray(previous), np.asarray(current)
    height, width = current.shape
    if config.variant == "float":
        diff = blur_float(previous, config.edge_rule) - blur_float(current, config.edge_rule)
        sad = float(np.abs(diff).sum(dtype=np.float64))
    elif config.blurs_difference:
        diff = previous.astype(np.int64) - current.astype(np.int64)
        sad = int(np.abs(blur_integer(diff, "3.2")).sum())
    else:
        diff = blur_integer(previous, "3.1") - blur_integer(current, "3.1")
        sad = int(np.abs(diff).sum())
    return normalise_sad(sad, height, width, config)


def clip_score(motion: np.ndarray, motion2: np.ndarray | None = None) -> float:
    """Open-Sora's clip score ``(mean(motion) + mean(motion2)) / 2`` (0 for an empty clip)."""
    motion = np.asarray(motion, dtype=np.float64)
    if not len(motion):
        return 0.0
    motion2 = motion2_from_motion(motion) if motion2 is None else np.asarray(motion2)
    return (float(motion.mean()) + float(motion2.mean())) / 2
