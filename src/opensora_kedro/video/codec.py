"""Encoding frames to media bytes with PyAV (H.264 MP4 clips, PNG / JPEG stills)."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

IMAGE_CODECS = {".png": ("png", "rgb24"), ".jpg": ("mjpeg", "yuvj420p")}


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 20) -> bytes:
    """Encode ``frames`` (uint8, ``T x H x W x 3`` RGB) as an H.264 MP4 in memory.

    H and W must be even (yuv420p). Every frame gets one packet, so the stream's
    frame count is exactly ``T``.
    """
    num_frames, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {width}x{height}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_fps_fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Deterministic output (same frames, same bytes): one thread, and no lookahead or
        # macroblock tree, whose assembly reads uninitialised padding (measured: the same
        # frames gave different bytes from run to run with them on).
        stream.options = {
            "crf": str(crf),
            "preset": "veryfast",
            "x264-params": "rc-lookahead=0:mbtree=0",
        }
        stream.codec_context.thread_count = 1
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[index]), format="rgb24")
            frame.pts, frame.time_base = index, 1 / stream.codec_context.framerate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def encode_image(frame: np.ndarray, suffix: str) -> bytes:
    """Encode one RGB frame (``H x W x 3`` uint8) as ``.png`` or ``.jpg`` bytes."""
    try:
        codec_name, pix_fmt = IMAGE_CODECS[suffix]
    except KeyError:
        raise ValueError(
            f"unsupported image suffix {suffix!r}; use one of {sorted(IMAGE_CODECS)}"
        ) from None
    height, width, _ = frame.shape
    codec = av.CodecContext.create(codec_name, "w")
    codec.width, codec.height, codec.pix_fmt = width, height, pix_fmt
    codec.time_base = Fraction(1, 25)
    video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    video_frame = video_frame.reformat(format=pix_fmt)
    packets = list(codec.encode(video_frame)) + list(codec.encode(None))
    return b"".join(bytes(packet) for packet in packets)
