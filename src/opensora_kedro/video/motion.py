"""The VMAF motion score of a clip, computed like libvmaf's ``motion`` feature from PyAV luma.

Open-Sora's v1.3 scoring tool runs ffmpeg + libvmaf with the clip as both reference and
distorted input and keeps ``(mean(integer_motion) + mean(integer_motion2)) / 2``. This
module reproduces that number without ffmpeg or libvmaf:

1. decode every frame with PyAV and take its 8-bit luma plane at the clip's own size;
2. blur with libvmaf's separable 5-tap filter ``{3571, 16004, 26386, 16004, 3571} / 65536``
   (vertical pass rounded ``(acc + 128) >> 8``, horizontal pass ``(acc + 32768) >> 16``,
   mirrored edges), in exact integer arithmetic;
3. ``motion[i] = SAD(blur[i - 1], blur[i]) / 256 / (W * H)`` with ``motion[0] = 0``,
   ``motion2[i] = min(motion[i], motion[i + 1])`` (``motion2[0] = 0``, the last frame keeps
   ``motion[last]``), and the clip score is ``(mean(motion) + mean(motion2)) / 2``.

Two libvmaf generations are supported (:class:`MotionConfig` ``edge_rule``):

* ``"3.2"`` (default, libvmaf >= 3.2, the libvmaf in ffmpeg builds of 2026 such as the one
  in the ``imageio-ffmpeg`` wheel): the upper edge mirrors to ``2n - i - 2`` and the signed
  frame difference ``prev - cur`` is blurred (rounding floors negative values), the SAD
  being the sum of its absolute values; the per-frame value is computed in double.
* ``"3.1"`` (libvmaf <= 3.1, e.g. 3.0.0): the upper edge mirrors to ``2n - i - 1``, each
  frame is blurred on its own and the blurred frames are differenced; the per-frame value
  goes through a float32 cast as in that code.

The two differ by up to about 0.1% per clip. The float variant (libvmaf's ``float_motion``)
blurs ``Y - 128`` with float32 taps and agrees with libvmaf to about 1e-5 per frame (float
summation order); it honours the edge rule's mirror but always blurs each frame.

Frames are streamed: the decoder yields frames into a small bounded chunk and only the
previous frame (raw for the 3.2 rule, blurred otherwise) is carried between chunks, so
memory does not grow with the clip length. Every decoded frame counts, whatever the
clip's frame rate (Open-Sora's ``-r 24`` is an input option that only re-times frames).

The luma comes from :mod:`opensora_kedro.video.luma` (decoded Y planes, as libvmaf
receives them), and the blur and SAD arithmetic on blocks of frames from
:mod:`opensora_kedro.video.motion_kernel`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from opensora_kedro.video.luma import iter_luma
from opensora_kedro.video.motion_kernel import (
    EdgeRule,
    Variant,
    Workspace,
    blur_block,
    column_sums,
    difference_block_sads,
    gather_rows,
    mirror_index,
    normalise,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotionConfig:
    """Which libvmaf motion feature to reproduce, and the size of a unit of work.

    ``variant``: ``"integer"`` (libvmaf's ``motion``, what Open-Sora stores) or ``"float"``
    (``float_motion``). ``edge_rule``: ``"3.2"`` for libvmaf >= 3.2 (the default: it is the
    current libvmaf and the one in the ffmpeg this project tests against) or ``"3.1"`` for
    libvmaf <= 3.1 (see the module docstring). ``block_pixels`` bounds the pixels processed
    at once (frames x rows x width), which keeps the working set in the CPU caches; it does
    not change the result.
    """

    variant: Variant = "integer"
    edge_rule: EdgeRule = "3.2"
    block_pixels: int = 1 << 16

    def __post_init__(self) -> None:
        if self.variant not in ("integer", "float"):
            raise ValueError(f"variant must be 'integer' or 'float', not {self.variant!r}")
        if self.edge_rule not in ("3.1", "3.2"):
            raise ValueError(f"edge_rule must be '3.1' or '3.2', not {self.edge_rule!r}")
        if self.block_pixels < 1:
            raise ValueError(f"block_pixels must be positive, not {self.block_pixels}")

    @property
    def blurs_difference(self) -> bool:
        """True where libvmaf blurs ``prev - cur`` rather than each frame (integer, 3.2)."""
        return self.variant == "integer" and self.edge_rule == "3.2"


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields, not results
class MotionResult:
    """A clip's motion score and, when asked for, its per-frame ``motion``/``motion2``."""

    score: float  # (mean_motion + mean_motion2) / 2, Open-Sora's ``motion_score``
    mean_motion: float
    mean_motion2: float
    num_frames: int
    motion: np.ndarray | None = None
    motion2: np.ndarray | None = None


def motion2_from_motion(motion: np.ndarray) -> np.ndarray:
    """libvmaf's ``motion2``: ``min(motion[i], motion[i + 1])``, 0 for the first frame and
    ``motion[last]`` for the last (it damps one-frame spikes such as scene cuts)."""
    motion = np.asarray(motion, dtype=np.float64)
    motion2 = motion.copy()
    if len(motion) > 1:
        motion2[:-1] = np.minimum(motion[:-1], motion[1:])
    if len(motion):
        motion2[0] = 0.0
    return motion2


class MotionAccumulator:
    """Streaming motion of one clip: feed ``H x W`` uint8 luma frames in order, in chunks of
    any size, then read :meth:`result`.

    Between chunks it keeps one frame-sized array (the previous raw frame for the 3.2 rule,
    the previous blurred frame otherwise), running sums and the last ``motion`` value, plus
    reusable buffers of at most ``config.block_pixels`` per array; with ``keep_per_frame``
    it also keeps one float per frame.
    """

    def __init__(
        self,
        height: int,
        width: int,
        config: MotionConfig = MotionConfig(),  # noqa: B008 - frozen, so a safe default
        *,
        keep_per_frame: bool = False,
    ) -> None:
        for side in (height, width):
            mirror_index(side, config.edge_rule)  # raises for a side under 3 pixels
        self.height, self.width, self.config = height, width, config
        self.num_frames = 0
        self._sum_motion = self._sum_motion2 = self._last_motion = 0.0
        self._motion: list[float] | None = [] if keep_per_frame else None
        self.block_frames = max(1, config.block_pixels // (height * width))
        self.block_rows = min(height, max(8, config.block_pixels // (self.block_frames * width)))
        dtype = np.float32 if config.variant == "float" else np.int32
        self._workspace = Workspace(self.block_frames, self.block_rows, width, dtype)
        if config.blurs_difference:
            self._previous: np.ndarray | None = None  # the last raw frame
        else:
            self._previous = np.zeros((height, width), dtype)  # the last blurred frame

    @property
    def held_frames(self) -> int:
        """Frame-sized arrays kept between chunks (1 once a frame was seen): constant."""
        return 0 if self._previous is None else 1

    def state_nbytes(self) -> int:
        """Bytes of the arrays this accumulator keeps (frames and buffers, not the optional
        per-frame list): it does not grow with the number of frames fed."""
        arrays = [*self._workspace.buffers(), self._previous]
        return sum(array.nbytes for array in arrays if array is not None)

    def update(self, frames: np.ndarray) -> None:
        """Add the next frames: an ``H x W`` or ``T x H x W`` uint8 array."""
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.shape[1:] != (self.height, self.width) or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames of {self.height}x{self.width}, "
                f"got {frames.dtype} {frames.shape}"
            )
        if not len(frames):
            return
        first = self.num_frames == 0
        if self.config.blurs_difference:
            sads = self._difference_sads(frames)
        else:
            sads = self._blurred_sads(frames)
            sads = sads[1:] if first else sads  # the clip's first frame has no predecessor
        if first:
            self._push(0.0)
        config = self.config
        for value in normalise(sads, self.height, self.width, config.variant, config.edge_rule):
            self._push(float(value))

    def _push(self, value: float) -> None:
        """Record ``motion[i] = value`` and complete ``motion2[i - 1]``."""
        if self.num_frames >= 2:
            self._sum_motion2 += min(self._last_motion, value)
        self._sum_motion += value
        self._last_motion = value
        self.num_frames += 1
        if self._motion is not None:
            self._motion.append(value)

    def result(self) -> MotionResult:
        """The score so far. A one-frame clip scores 0, as in libvmaf: nothing moved."""
        if not self.num_frames:
            raise ValueError("no frames were added")
        last_motion2 = self._last_motion if self.num_frames >= 2 else 0.0
        mean_motion = self._sum_motion / self.num_frames
        mean_motion2 = (self._sum_motion2 + last_motion2) / self.num_frames
        motion = motion2 = None
        if self._motion is not None:
            motion = np.array(self._motion, np.float64)
            motion2 = motion2_from_motion(motion)
        return MotionResult(
            score=(mean_motion + mean_motion2) / 2,
            mean_motion=mean_motion,
            mean_motion2=mean_motion2,
            num_frames=self.num_frames,
            motion=motion,
            motion2=motion2,
        )

    def _blocks(self, frames: int) -> Iterator[tuple[int, int, int, int]]:
        """``(t0, t1, r0, r1)``: frame groups in order, row bands within each group."""
        for t0 in range(0, frames, self.block_frames):
            t1 = min(frames, t0 + self.block_frames)
            for r0 in range(0, self.height, self.block_rows):
                yield t0, t1, r0, min(self.height, r0 + self.block_rows)

    def _difference_sads(self, frames: np.ndarray) -> np.ndarray:
        """SAD of the blurred ``prev - cur`` for each frame that has a predecessor (3.2)."""
        stack = frames if self._previous is None else np.concatenate([self._previous[None], frames])
        sads = np.zeros(len(stack) - 1, np.int64)
        for t0, t1, r0, r1 in self._blocks(len(stack) - 1):
            previous = gather_rows(stack[t0:t1], r0, r1, "3.2")
            current = gather_rows(stack[t0 + 1 : t1 + 1], r0, r1, "3.2")
            sads[t0:t1] += difference_block_sads(self._workspace, previous, current)
        self._previous = frames[-1].copy()  # the caller may reuse its chunk buffer
        return sads

    def _blurred_sads(self, frames: np.ndarray) -> np.ndarray:
        """SAD of each frame's blur against the previous frame's (3.1 and float)."""
        variant, edge_rule = self.config.variant, self.config.edge_rule
        sads = np.zeros(len(frames), np.float64 if variant == "float" else np.int64)
        for t0, t1, r0, r1 in self._blocks(len(frames)):
            source = gather_rows(frames[t0:t1], r0, r1, edge_rule)
            blurred, diff = blur_block(self._workspace, source, variant, edge_rule)
            previous = self._previous[r0:r1]
            np.subtract(blurred[0], previous, out=diff[0])
            np.subtract(blurred[1:], blurred[:-1], out=diff[1:])
            np.abs(diff, out=diff)
            sads[t0:t1] += column_sums(diff)
            previous[...] = blurred[-1]
        return sads


def motion_from_frames(
    frames: Iterable[np.ndarray],
    config: MotionConfig = MotionConfig(),  # noqa: B008 - frozen, so a safe default
    *,
    per_frame: bool = False,
) -> MotionResult:
    """The motion score of a stream of ``H x W`` uint8 luma frames (arrays or views).

    Frames are copied into a chunk of ``MotionAccumulator.block_frames`` frames, so only a
    bounded number are held at any time. Raises ``ValueError`` for no frames or for frames
    that change size.
    """
    accumulator: MotionAccumulator | None = None
    chunk = np.empty(0)
    filled = 0
    for frame in frames:
        if accumulator is None:
            height, width = np.shape(frame)
            accumulator = MotionAccumulator(height, width, config, keep_per_frame=per_frame)
            chunk = np.empty((accumulator.block_frames, height, width), np.uint8)
        if np.shape(frame) != chunk.shape[1:]:
            raise ValueError(f"frame size changed from {chunk.shape[1:]} to {np.shape(frame)}")
        if np.asarray(frame).dtype != np.uint8:
            raise ValueError(f"expected uint8 luma, got {np.asarray(frame).dtype}")
        chunk[filled] = frame
        filled += 1
        if filled == len(chunk):
            accumulator.update(chunk)
            filled = 0
    if accumulator is None:
        raise ValueError("no frames to measure")
    accumulator.update(chunk[:filled])
    return accumulator.result()


def motion_score(
    path: str | os.PathLike,
    config: MotionConfig = MotionConfig(),  # noqa: B008 - frozen, so a safe default
    *,
    per_frame: bool = False,
) -> MotionResult:
    """The VMAF motion score of the video at ``path`` (every decoded frame, native size).

    ``result.score`` is Open-Sora's ``motion_score``; ``per_frame=True`` also returns the
    per-frame ``motion`` and ``motion2`` arrays. A one-frame clip scores 0 (libvmaf's value:
    there is no second frame to move relative to). Raises ``ValueError`` for a file without
    a video stream or one that decodes to no frames, and PyAV's errors for unreadable files.
    """
    result = motion_from_frames(iter_luma(path), config, per_frame=per_frame)
    logger.debug(
        "%s: motion score %.6f over %d frames (%s, libvmaf %s rule)",
        path, result.score, result.num_frames, config.variant, config.edge_rule,
    )  # fmt: skip
    return result
