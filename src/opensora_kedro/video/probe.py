"""Probing media files with PyAV: the metadata Open-Sora's tables need, or why one is unusable."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import av

# The first bytes of containers we can recognise; a file that starts like one but
# will not open or demux completely is truncated rather than "not a video".
_MAGIC = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x47"),  # MPEG-TS sync byte
    (0, b"\x89PNG"),
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"GIF8"),
)


class ProbeError(Exception):
    """A file that cannot be used; ``reason`` is a short stable code, the message the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """Displayed size, frame rate and exact frame count of a video or still image."""

    num_frames: int
    height: int
    width: int
    fps: float  # NaN for stills
    rotation: int  # degrees, from the display matrix; height and width already account for it


def _looks_like_media(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _MAGIC)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as error:
        if _looks_like_media(path):
            raise ProbeError(
                "truncated", f"container header present but unreadable: {error}"
            ) from error
        raise ProbeError("not_a_video", f"not a recognised media file: {error}") from error


def _scan_stream(container, stream, check_frames: int) -> tuple[int, list[av.VideoFrame]]:
    """One demux pass: count the packets (one per video frame), decode the first frames.

    A short file (fewer packets than the header states, a packet cut off at the
    end of the file, demuxing that breaks off) is ``truncated``; a complete file
    whose first frames do not decode is ``undecodable``.
    """
    count, frames, cut_off, decode_error = 0, [], False, None
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            count += 1
            cut_off = cut_off or packet.is_corrupt
            if len(frames) < check_frames and decode_error is None:
                try:
                    frames.extend(stream.codec_context.decode(packet))
                except av.error.FFmpegError as error:
                    decode_error = error
    except av.error.FFmpegError as error:
        raise ProbeError(
            "truncated", f"demuxing broke off after {count} frames: {error}"
        ) from error
    stated = stream.frames
    if cut_off or (stated and count < stated):
        raise ProbeError(
            "truncated", f"the header states {stated} frames, the file holds {count} complete"
        )
    if len(frames) < check_frames and decode_error is None:
        try:
            frames.extend(stream.codec_context.decode(None))  # the decoder's delayed frames
        except av.error.FFmpegError as error:
            decode_error = error
    if not frames:
        detail = f": {decode_error}" if decode_error else ""
        raise ProbeError("undecodable", f"the first frames do not decode{detail}")
    return count, frames


def probe_video(path: str | os.PathLike, check_frames: int = 2) -> VideoInfo:
    """Probe ``path`` and return its :class:`VideoInfo`, or raise :class:`ProbeError`.

    The frame count is counted from the packets, not read from the header, so it is
    exact for containers that do not state it (and a header that promises more
    frames than the file holds is reported as truncated). The first ``check_frames``
    frames are decoded to prove the stream is usable.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ProbeError("empty_file", "the file is empty (0 bytes)")
    with _open(path) as container:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams})
            if "audio" in kinds:
                raise ProbeError("audio_only", "no video stream, only audio")
            raise ProbeError("no_video_stream", f"no video stream (streams: {kinds or 'none'})")
        stream = container.streams.video[0]
        num_frames, frames = _scan_stream(container, stream, check_frames)
        first = frames[0]
        rotation = int(round(first.rotation or 0)) % 360
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            num_frames=max(num_frames, 1),
            height=height,
            width=width,
            fps=_frame_rate(stream, num_frames),
            rotation=rotation,
        )


def _frame_rate(stream, num_frames: int) -> float:
    """Average frames per second (NaN for a still image), rounded like Open-Sora's meta tool."""
    if num_frames <= 1 and stream.codec_context.name in {"png", "mjpeg", "gif", "bmp", "webp"}:
        return math.nan
    rate = stream.average_rate or stream.guessed_rate
    if not rate and stream.duration and stream.time_base:
        rate = num_frames / float(stream.duration * stream.time_base)
    return round(float(rate), 3) if rate else math.nan
