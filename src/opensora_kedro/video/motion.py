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

The luma comes straight from the decoded Y plane of 8-bit YUV (and gray) frames, as
libvmaf receives them; RGB and other formats are converted to limited-range ``yuv420p``
first, as ffmpeg does in front of libvmaf (see :func:`luma_plane`). Frames with a display
rotation are turned upright first, as ffmpeg's autorotation does (see :func:`iter_luma`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np
from av.video.reformatter import ColorRange

from opensora_kedro.video.decode import set_threads

logger = logging.getLogger(__name__)

Variant = Literal["integer", "float"]
EdgeRule = Literal["3.1", "3.2"]

# libvmaf's integer taps (they sum to 65536) and float taps; both are symmetric, so only
# the outer, inner and centre weights are needed.
INTEGER_TAPS = (3571, 16004, 26386, 16004, 3571)
FLOAT_TAPS = (0.054488685, 0.244201342, 0.402619947, 0.244201342, 0.054488685)
_C0, _C1, _C2 = INTEGER_TAPS[:3]
_F0, _F1, _F2 = (np.float32(tap) for tap in FLOAT_TAPS[:3])
RADIUS = 2

# 8-bit formats whose first plane is the luma that libvmaf reads as it is (ffmpeg hands
# full-range yuvj and gray over without a range conversion); anything else goes through
# swscale to limited-range yuv420p first, as ffmpeg converts RGB in front of libvmaf.
_DIRECT_FORMATS = frozenset(
    {"gray", "nv12", "nv21", "nv16", "nv24"}
    | {f"yuv{j}{sub}p" for j in ("", "j") for sub in ("410", "411", "420", "422", "440", "444")}
)
# A 3.2 vertical pass bounded by this fits the int32 horizontal pass:
# 65536 * 32767 + 32768 < 2 ** 31.
_INT32_SAFE = 32767


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


# --------------------------------------------------------------------------------------
# Building blocks shared with the plain reference (tests/video/motion_reference.py), which
# the streaming kernel below must agree with bit for bit.
# --------------------------------------------------------------------------------------


def mirror_index(n: int, edge_rule: EdgeRule, radius: int = RADIUS) -> np.ndarray:
    """Source index of each padded position ``-radius .. n + radius - 1`` under libvmaf's
    mirror: ``i < 0`` reads ``-i``; ``i >= n`` reads ``2n - i - 1`` (3.1) or ``2n - i - 2``
    (3.2)."""
    if n <= radius:
        raise ValueError(f"a side of {n} pixels is too small for the {2 * radius + 1}-tap blur")
    index = np.arange(-radius, n + radius)
    index = np.where(index < 0, -index, index)
    upper = 1 if edge_rule == "3.1" else 2
    return np.where(index >= n, 2 * n - index - upper, index)


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


# --------------------------------------------------------------------------------------
# The streaming kernel: the same arithmetic on blocks of frames x rows, in place, on
# buffers allocated once per clip (a fresh allocation per block costs page faults).
# --------------------------------------------------------------------------------------


def _taps(out: np.ndarray, src: np.ndarray, step: int, tmp: np.ndarray, taps) -> None:
    """``out[i] = c0 (x[i] + x[i + 4s]) + c1 (x[i + s] + x[i + 3s]) + c2 x[i + 2s]`` over the
    flattened arrays, ``s = step`` (1 along a row, the row length down a column).

    Working on one contiguous 1-D array keeps numpy in its fastest loops; the last ``4s``
    positions of ``out`` are left alone (they are scratch in :class:`_Workspace`'s layout).
    """
    src, out, tmp = src.reshape(-1), out.reshape(-1), tmp.reshape(-1)
    n = src.size - 4 * step
    head, scratch = out[:n], tmp[:n]
    c0, c1, c2 = taps
    np.add(src[:n], src[4 * step : 4 * step + n], out=head)
    head *= c0
    np.add(src[step : step + n], src[3 * step : 3 * step + n], out=scratch)
    scratch *= c1
    head += scratch
    np.multiply(src[2 * step : 2 * step + n], c2, out=scratch)
    head += scratch


@functools.lru_cache(maxsize=32)
def _mirrored(n: int, edge_rule: EdgeRule) -> np.ndarray:
    """:func:`mirror_index`, cached: blocks ask for the same few sides again and again."""
    index = mirror_index(n, edge_rule)
    index.flags.writeable = False
    return index


def _mirror_columns(padded: np.ndarray, width: int, edge_rule: EdgeRule) -> None:
    """Fill the two columns on each side of ``padded[..., 2 : width + 2]`` by mirroring."""
    source = _mirrored(width, edge_rule)
    for column in (0, 1, width + 2, width + 3):
        padded[..., column] = padded[..., source[column] + RADIUS]


class _Workspace:
    """Buffers for one block, each laid out ``frames x (rows + 4) x (width + 4)``.

    Every frame's slab carries room for the 2 + 2 halo rows and every row the 2 + 2
    mirrored columns, so both blur passes are shifted slices of one flat array. The
    source goes in at ``[:, :, 2 : width + 2]``; the vertical pass leaves row ``r`` of the
    block at slab row ``r`` (still at columns ``2 : width + 2``) and the horizontal pass
    leaves the blurred block at ``[:, :rows, :width]``; everything else is scratch.
    """

    def __init__(self, frames: int, rows: int, width: int, dtype: type) -> None:
        self.width = width
        size = frames * (rows + 2 * RADIUS) * (width + 2 * RADIUS)
        # Zeros, not empty: padding that is read before it is first written must hold
        # finite values (later it holds finite scratch from earlier blocks).
        self._buffers = [np.zeros(size, dtype) for _ in range(3)]
        self._wide: list[np.ndarray] = []

    def views(self, frames: int, rows: int) -> list[np.ndarray]:
        """``[source, vertical, tmp, out]`` for a block of ``frames x rows``, contiguous.

        ``out`` is ``source``: the source is dead once the vertical pass has read it, and
        three buffers instead of four keep a larger block in the CPU's L2 cache.
        """
        source, vertical, tmp = self._cut(self._buffers, frames, rows)
        return [source, vertical, tmp, source]

    def wide_views(self, frames: int, rows: int) -> list[np.ndarray]:
        """int64 ``[vertical, tmp, out]`` for the rare blocks that overflow int32."""
        if not self._wide:
            self._wide = [np.zeros(self._buffers[0].size, np.int64) for _ in range(3)]
        return self._cut(self._wide, frames, rows)

    def buffers(self) -> list[np.ndarray]:
        """Every buffer allocated so far."""
        return [*self._buffers, *self._wide]

    def _cut(self, buffers: list[np.ndarray], frames: int, rows: int) -> list[np.ndarray]:
        shape = (frames, rows + 2 * RADIUS, self.width + 2 * RADIUS)
        size = shape[0] * shape[1] * shape[2]
        return [buffer[:size].reshape(shape) for buffer in buffers]


def _gather_rows(frames: np.ndarray, start: int, stop: int, edge_rule: EdgeRule) -> np.ndarray:
    """Rows ``start - 2 .. stop + 1`` of every frame, mirrored at the top and bottom."""
    height = frames.shape[1]
    if start >= RADIUS and stop + RADIUS <= height:
        return frames[:, start - RADIUS : stop + RADIUS]
    return frames[:, _mirrored(height, edge_rule)[start : stop + 2 * RADIUS]]


def _column_sums(block: np.ndarray) -> np.ndarray:
    """Per-frame sums of a ``T x rows x W`` block of non-negative values up to 65535.

    Summing down the rows in int32 first is exact (rows <= 32768) and about twice as
    fast as one int64 reduction.
    """
    if block.dtype.kind == "f":
        return block.sum(axis=(1, 2), dtype=np.float64)
    return block.sum(axis=1, dtype=np.int32).sum(axis=1, dtype=np.int64)


def _difference_block_sads(workspace: _Workspace, previous, current) -> np.ndarray:
    """Per-frame SAD of libvmaf 3.2's blur of ``previous - current`` (``T x rows+4 x W``
    uint8 rows including the halo)."""
    frames, rows, width = previous.shape
    rows -= 2 * RADIUS
    source, vertical, tmp, out = workspace.views(frames, rows)
    np.subtract(previous, current, out=source[:, :, RADIUS : width + RADIUS], dtype=np.int32)
    _taps(vertical, source, width + 2 * RADIUS, tmp, (_C0, _C1, _C2))
    vertical += 128
    vertical >>= 8  # an arithmetic shift: floors negative sums like the C code
    _mirror_columns(vertical, width, "3.2")
    valid = vertical[:, :rows]
    if max(-int(valid.min()), int(valid.max())) > _INT32_SAFE:
        # Large differences (a scene cut) overflow int32 in the horizontal pass.
        wide_vertical, tmp, out = workspace.wide_views(frames, rows)
        np.copyto(wide_vertical, vertical)
        vertical = wide_vertical
    _taps(out, vertical, 1, tmp, (_C0, _C1, _C2))
    out += 32768
    out >>= 16
    np.abs(out, out=out)
    return _column_sums(out[:, :rows, :width])


def _blur_block(workspace: _Workspace, source_rows: np.ndarray, config: MotionConfig):
    """Blur ``T x rows+4 x W`` uint8 rows (with halo) each on its own (3.1 integer or
    float); returns the ``T x rows x W`` view of the result and a free buffer of that shape."""
    frames, rows, width = source_rows.shape
    rows -= 2 * RADIUS
    source, vertical, tmp, out = workspace.views(frames, rows)
    inner = source[:, :, RADIUS : width + RADIUS]
    if config.variant == "float":
        np.subtract(source_rows, np.float32(128), out=inner, dtype=np.float32)
        _taps(vertical, source, width + 2 * RADIUS, tmp, (_F0, _F1, _F2))
        _mirror_columns(vertical, width, config.edge_rule)
        _taps(out, vertical, 1, tmp, (_F0, _F1, _F2))
        return out[:, :rows, :width], tmp[:, :rows, :width]
    np.copyto(inner, source_rows)
    _taps(vertical, source, width + 2 * RADIUS, tmp, (_C0, _C1, _C2))
    vertical += 128
    vertical >>= 8
    _mirror_columns(vertical, width, config.edge_rule)
    # Non-negative sums up to 65536 * 65280 + 32768: uint32 holds them, int32 does not.
    wide = out.view(np.uint32)
    _taps(wide, vertical.view(np.uint32), 1, tmp.view(np.uint32), (_C0, _C1, _C2))
    wide += 32768
    wide >>= 16
    return out[:, :rows, :width], tmp[:, :rows, :width]


def _normalise(sads: np.ndarray, height: int, width: int, config: MotionConfig) -> np.ndarray:
    """A frame's SAD as libvmaf reports it, over an array of SADs: the integer SAD over 256
    and the pixel count (in double for 3.2, through a float32 cast for 3.1); the float SAD
    over the pixel count in float32."""
    pixels = height * width
    if config.variant == "float":
        return (sads.astype(np.float32) / np.float32(pixels)).astype(np.float64)
    if config.edge_rule == "3.1":
        return ((sads / 256.0).astype(np.float32) / np.float32(pixels)).astype(np.float64)
    return sads / 256.0 / pixels


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
        self._workspace = _Workspace(self.block_frames, self.block_rows, width, dtype)
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
        for value in _normalise(sads, self.height, self.width, self.config):
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
            previous = _gather_rows(stack[t0:t1], r0, r1, "3.2")
            current = _gather_rows(stack[t0 + 1 : t1 + 1], r0, r1, "3.2")
            sads[t0:t1] += _difference_block_sads(self._workspace, previous, current)
        self._previous = frames[-1].copy()  # the caller may reuse its chunk buffer
        return sads

    def _blurred_sads(self, frames: np.ndarray) -> np.ndarray:
        """SAD of each frame's blur against the previous frame's (3.1 and float)."""
        sads = np.zeros(len(frames), np.float64 if self.config.variant == "float" else np.int64)
        for t0, t1, r0, r1 in self._blocks(len(frames)):
            source = _gather_rows(frames[t0:t1], r0, r1, self.config.edge_rule)
            blurred, diff = _blur_block(self._workspace, source, self.config)
            previous = self._previous[r0:r1]
            np.subtract(blurred[0], previous, out=diff[0])
            np.subtract(blurred[1:], blurred[:-1], out=diff[1:])
            np.abs(diff, out=diff)
            sads[t0:t1] += _column_sums(diff)
            previous[...] = blurred[-1]
        return sads


# --------------------------------------------------------------------------------------
# Decoding and the public entry points.
# --------------------------------------------------------------------------------------


def luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """The 8-bit luma of a decoded frame as an ``H x W`` uint8 view (no copy, no resize).

    8-bit YUV and gray are read as they are, like libvmaf reads them. RGB and the rest go
    through swscale to limited-range ``yuv420p`` first, as ffmpeg converts them in front of
    libvmaf (sources above 8 bits are reduced to 8 here, where libvmaf would measure them
    at their own depth: the score then differs by about 0.1%).
    """
    if frame.format.name not in _DIRECT_FORMATS:
        frame = frame.reformat(format="yuv420p", dst_color_range=ColorRange.MPEG)
    plane = frame.planes[0]
    # Rows are padded to ``line_size`` bytes; keep the visible width only.
    rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width]


def iter_luma(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield every decoded frame of ``path``'s first video stream as ``H x W`` uint8 luma,
    a view of the decoded frame's plane (no copy).

    A frame with a display rotation is turned upright, as ffmpeg's autorotation turns it
    before libvmaf sees it (a quarter turn swaps which pass runs along the rows).
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        set_threads(stream)
        for frame in container.decode(stream):
            quarter_turns = round((frame.rotation or 0) / 90) % 4
            yield np.rot90(luma_plane(frame), quarter_turns)


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
