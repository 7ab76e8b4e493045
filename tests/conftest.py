"""Shared fixtures: media files of known content, written with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` skip cleanly on a machine without CUDA."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def gradient_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Frames with a moving gradient, so every frame differs."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = [((xs + ys + 7 * t) % 256).astype(np.uint8) for t in range(num_frames)]
    return np.repeat(np.stack(frames)[..., None], 3, axis=-1)


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: float = 24,
    codec: str = "libx264",
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: float | None = None,
) -> Path:
    """Write ``frames`` to ``path`` (container from the suffix), optionally with explicit
    presentation times (variable frame rate) or a display rotation."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[index], time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_audio(path: Path, seconds: float = 1.0, rate: int = 44100) -> Path:
    """An audio-only file: a sine tone encoded as AAC."""
    samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(
                samples[None, start : start + 1024], format="flt", layout="mono"
            )
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def corrupt_media_data(path: Path) -> Path:
    """Zero the payload of an MP4's ``mdat`` box: a complete file whose frames do not decode."""
    content = bytearray(path.read_bytes())
    start = content.find(b"mdat")
    size = int.from_bytes(content[start - 4 : start], "big")
    content[start + 4 : start - 4 + size] = bytes(size - 8)
    path.write_bytes(bytes(content))
    return path


@pytest.fixture
def good_clip(tmp_path: Path) -> Path:
    return write_video(tmp_path / "good.mp4", gradient_frames(12, 64, 96), fps=24)


def demo_training_table(root: Path, demo_params: dict):
    """Render demo clips under ``root / "videos"`` and return their training table."""
    from opensora_kedro.config.schemas.data import DemoDataParams
    from opensora_kedro.data.scan import build_video_table
    from opensora_kedro.data.training_table import build_training_table
    from opensora_kedro.datasets.video_folder import VideoFolderDataset
    from opensora_kedro.pipelines.demo_data.nodes import plan_clips, render_clips

    demo = DemoDataParams.model_validate(demo_params)
    files, captions = render_clips(plan_clips(demo), crf=demo.crf)
    folder = VideoFolderDataset(str(root / "videos"))
    folder.save(files)
    meta, _ = build_video_table(folder.load(), captions)
    return build_training_table(meta.assign(score_vmafmotion=1.0), fps_max=24, vmaf=True)
