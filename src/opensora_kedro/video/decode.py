"""Decoding frames with PyAV."""

from __future__ import annotations

import os
from collections.abc import Iterator

import av
import numpy as np


def decoder_threads() -> int:
    """Threads per decoder: ``OMP_NUM_THREADS`` where set (Ray sets it to a task's CPUs, so
    one-CPU workers do not each start a thread per core), else 0 (FFmpeg: one per core)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


def set_threads(stream: av.video.stream.VideoStream) -> None:
    """Frame threads for ``stream``'s decoder (they overlap decoding with our arithmetic)."""
    stream.thread_type = "AUTO"
    stream.thread_count = decoder_threads()


def iter_frames(path: str | os.PathLike, pix_fmt: str = "rgb24") -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` one at a time as ``H x W x C`` uint8 arrays."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        set_threads(stream)
        for frame in container.decode(stream):
            yield frame.to_ndarray(format=pix_fmt)


def read_frames(path: str | os.PathLike) -> np.ndarray:
    """All frames of ``path`` as RGB, ``T x H x W x 3`` uint8 (fine for short clips)."""
    return np.stack(list(iter_frames(path)))


class NoFramesError(ValueError):
    """A file that opens and decodes without error but yields no frame."""


def frame_indices(num_frames: int, frames: int) -> list[int]:
    """Up to ``frames`` distinct indices spread evenly over ``num_frames`` (first and last
    included): a still gives ``[0]``, a two-frame clip ``[0, 1]``."""
    count = max(min(frames, num_frames), 1)
    return sorted({int(i) for i in np.linspace(0, max(num_frames - 1, 0), count).round()})


def sample_frames(path: str | os.PathLike, num_frames: int, frames: int) -> list[np.ndarray]:
    """RGB frames (``H x W x 3`` uint8) at :func:`frame_indices`, decoding no further than the
    last one and converting only those. A clip shorter than its metadata gives the ones it has
    and its last frame. Raises :class:`NoFramesError` when no frame decodes."""
    wanted = frame_indices(int(num_frames), frames)
    found: dict[int, np.ndarray] = {}
    last = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        set_threads(stream)
        for index, frame in enumerate(container.decode(stream)):
            last = (index, frame)
            if index in wanted:
                found[index] = frame.to_ndarray(format="rgb24")
            if index >= wanted[-1]:
                break
    if last is None:
        raise NoFramesError("no frame could be decoded")
    if len(found) < len(wanted) and last[0] not in found:  # the file ends early
        found[last[0]] = last[1].to_ndarray(format="rgb24")
    return [found[index] for index in sorted(found)]
