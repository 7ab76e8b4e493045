"""Decoding frames with PyAV."""

from __future__ import annotations

import os
from collections.abc import Iterator

import av
import numpy as np


def iter_frames(path: str | os.PathLike, pix_fmt: str = "rgb24") -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` one at a time as ``H x W x C`` uint8 arrays."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format=pix_fmt)


def read_frames(path: str | os.PathLike) -> np.ndarray:
    """All frames of ``path`` as RGB, ``T x H x W x 3`` uint8 (fine for short clips)."""
    return np.stack(list(iter_frames(path)))
