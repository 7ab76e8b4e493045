"""The block arithmetic of the VMAF motion score: libvmaf's 5-tap blur and per-frame SADs.

libvmaf blurs with the separable filter ``{3571, 16004, 26386, 16004, 3571} / 65536``
(vertical pass rounded ``(acc + 128) >> 8``, horizontal pass ``(acc + 32768) >> 16``,
mirrored edges) in exact integer arithmetic; its float variant blurs ``Y - 128`` with
float32 taps. The functions here do that arithmetic on blocks of frames x rows, in place,
on buffers allocated once per clip (a fresh allocation per block costs page faults);
:class:`opensora_kedro.video.motion.MotionAccumulator` streams a clip through them, and
the plain reference in tests/video/motion_reference.py is what they must agree with bit
for bit.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

Variant = Literal["integer", "float"]
EdgeRule = Literal["3.1", "3.2"]

# libvmaf's integer taps (they sum to 65536) and float taps; both are symmetric, so only
# the outer, inner and centre weights are needed.
INTEGER_TAPS = (3571, 16004, 26386, 16004, 3571)
FLOAT_TAPS = (0.054488685, 0.244201342, 0.402619947, 0.244201342, 0.054488685)
_C0, _C1, _C2 = INTEGER_TAPS[:3]
_F0, _F1, _F2 = (np.float32(tap) for tap in FLOAT_TAPS[:3])
RADIUS = 2

# A 3.2 vertical pass bounded by this fits the int32 horizontal pass:
# 65536 * 32767 + 32768 < 2 ** 31.
_INT32_SAFE = 32767


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


def _taps(out: np.ndarray, src: np.ndarray, step: int, tmp: np.ndarray, taps: tuple) -> None:
    """``out[i] = c0 (x[i] + x[i + 4s]) + c1 (x[i + s] + x[i + 3s]) + c2 x[i + 2s]`` over the
    flattened arrays, ``s = step`` (1 along a row, the row length down a column).

    Working on one contiguous 1-D array keeps numpy in its fastest loops; the last ``4s``
    positions of ``out`` are left alone (they are scratch in :class:`Workspace`'s layout).
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


class Workspace:
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


def gather_rows(frames: np.ndarray, start: int, stop: int, edge_rule: EdgeRule) -> np.ndarray:
    """Rows ``start - 2 .. stop + 1`` of every frame, mirrored at the top and bottom."""
    height = frames.shape[1]
    if start >= RADIUS and stop + RADIUS <= height:
        return frames[:, start - RADIUS : stop + RADIUS]
    return frames[:, _mirrored(height, edge_rule)[start : stop + 2 * RADIUS]]


def column_sums(block: np.ndarray) -> np.ndarray:
    """Per-frame sums of a ``T x rows x W`` block of non-negative values up to 65535.

    Summing down the rows in int32 first is exact (rows <= 32768) and about twice as
    fast as one int64 reduction.
    """
    if block.dtype.kind == "f":
        return block.sum(axis=(1, 2), dtype=np.float64)
    return block.sum(axis=1, dtype=np.int32).sum(axis=1, dtype=np.int64)


def difference_block_sads(
    workspace: Workspace, previous: np.ndarray, current: np.ndarray
) -> np.ndarray:
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
    return column_sums(out[:, :rows, :width])


def blur_block(
    workspace: Workspace, source_rows: np.ndarray, variant: Variant, edge_rule: EdgeRule
) -> tuple[np.ndarray, np.ndarray]:
    """Blur ``T x rows+4 x W`` uint8 rows (with halo) each on its own (3.1 integer or
    float); returns the ``T x rows x W`` view of the result and a free buffer of that shape."""
    frames, rows, width = source_rows.shape
    rows -= 2 * RADIUS
    source, vertical, tmp, out = workspace.views(frames, rows)
    inner = source[:, :, RADIUS : width + RADIUS]
    if variant == "float":
        np.subtract(source_rows, np.float32(128), out=inner, dtype=np.float32)
        _taps(vertical, source, width + 2 * RADIUS, tmp, (_F0, _F1, _F2))
        _mirror_columns(vertical, width, edge_rule)
        _taps(out, vertical, 1, tmp, (_F0, _F1, _F2))
        return out[:, :rows, :width], tmp[:, :rows, :width]
    np.copyto(inner, source_rows)
    _taps(vertical, source, width + 2 * RADIUS, tmp, (_C0, _C1, _C2))
    vertical += 128
    vertical >>= 8
    _mirror_columns(vertical, width, edge_rule)
    # Non-negative sums up to 65536 * 65280 + 32768: uint32 holds them, int32 does not.
    wide = out.view(np.uint32)
    _taps(wide, vertical.view(np.uint32), 1, tmp.view(np.uint32), (_C0, _C1, _C2))
    wide += 32768
    wide >>= 16
    return out[:, :rows, :width], tmp[:, :rows, :width]


def normalise(
    sads: np.ndarray, height: int, width: int, variant: Variant, edge_rule: EdgeRule
) -> np.ndarray:
    """A frame's SAD as libvmaf reports it, over an array of SADs: the integer SAD over 256
    and the pixel count (in double for 3.2, through a float32 cast for 3.1); the float SAD
    over the pixel count in float32."""
    pixels = height * width
    if variant == "float":
        return (sads.astype(np.float32) / np.float32(pixels)).astype(np.float64)
    if edge_rule == "3.1":
        return ((sads / 256.0).astype(np.float32) / np.float32(pixels)).astype(np.float64)
    return sads / 256.0 / pixels
