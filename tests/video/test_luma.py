"""Decoding a clip to the 8-bit luma planes the motion score reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from opensora_kedro.video.luma import iter_luma

try:  # the dev extra's static ffmpeg makes the test clip
    import imageio_ffmpeg
except ImportError:  # pragma: no cover
    imageio_ffmpeg = None
needs_ffmpeg = pytest.mark.skipif(imageio_ffmpeg is None, reason="needs imageio-ffmpeg")
FFMPEG_TIMEOUT_S = 60


@pytest.fixture
def testsrc2_clip(tmp_path: Path) -> Path:
    """One second of lavfi's testsrc2 as 256x144 H.264 yuv420p (studio-range luma)."""
    clip = tmp_path / "testsrc2.mp4"
    source = ["-f", "lavfi", "-i", "testsrc2=size=256x144:rate=24:duration=1"]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostats", "-loglevel", "error"]
    command += [*source, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)]
    subprocess.run(command, check=True, timeout=FFMPEG_TIMEOUT_S)
    return clip


@needs_ffmpeg
def test_iter_luma_reads_the_y_plane_without_range_conversion(testsrc2_clip):
    luma = next(iter_luma(testsrc2_clip))
    assert luma.shape == (144, 256) and luma.dtype == np.uint8
    # testsrc2's studio-range luma stays within 16..235 (a gray conversion would stretch it).
    assert luma.min() >= 16 and luma.max() <= 235
