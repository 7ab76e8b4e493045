"""Decoding a clip to the 8-bit luma planes libvmaf's motion feature reads.

The luma comes straight from the decoded Y plane of 8-bit YUV (and gray) frames, as
libvmaf receives them; RGB and other formats are converted to limited-range ``yuv420p``
first, as ffmpeg does in front of libvmaf (see :func:`luma_plane`). Frames with a display
rotation are turned upright first, as ffmpeg's autorotation does (see :func:`iter_luma`).
The motion score itself is in :mod:`opensora_kedro.video.motion`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import av
import numpy as np
from av.video.reformatter import ColorRange

from opensora_kedro.video.decode import set_threads

# 8-bit formats whose first plane is the luma that libvmaf reads as it is (ffmpeg hands
# full-range yuvj and gray over without a range conversion); anything else goes through
# swscale to limited-range yuv420p first, as ffmpeg converts RGB in front of libvmaf.
_DIRECT_FORMATS = frozenset(
    {"gray", "nv12", "nv21", "nv16", "nv24"}
    | {f"yuv{j}{sub}p" for j in ("", "j") for sub in ("410", "411", "420", "422", "440", "444")}
)


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
