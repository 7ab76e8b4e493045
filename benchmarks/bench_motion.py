"""VMAF motion score: Open-Sora's ffmpeg + libvmaf command against ``motion_score``.

Generates clips with the ffmpeg of the ``imageio-ffmpeg`` wheel (a libvmaf 3.2 build),
then times, clip by clip and best of ``--repeats``:

(a) Open-Sora's way: ``ffmpeg -r 24 -i CLIP -r 24 -i CLIP -lavfi ...libvmaf...`` writing a
    JSON log, parsed for ``(mean(motion) + mean(motion2)) / 2``;
(b) ours: ``opensora_kedro.video.motion.motion_score`` (decoding included).

.venv/bin/python benchmarks/bench_motion.py
.venv/bin/python benchmarks/bench_motion.py --sizes 1280x720 --frames 72 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

from opensora_kedro.video.motion import MotionConfig, motion_score

logger = logging.getLogger("bench_motion")

# lavfi sources (size and rate are filled in) and an optional filter; `life` is seeded
# so that every run measures the same clip.
SOURCES = {
    "testsrc2": ("testsrc2=size={size}:rate=24", None),
    "mandelbrot": ("mandelbrot=size={size}:rate=24", None),
    "life": ("life=size={size}:rate=24:seed=7:mold=10:ratio=0.1", None),
    "scroll": ("testsrc2=size={size}:rate=24", "scroll=h=0.02"),
}
# The reference command from ../shared/reference/vmaf-motion.md (Open-Sora v1.3's tool).
GRAPH = (
    "[0:v]setpts=PTS-STARTPTS[ref];[1:v]setpts=PTS-STARTPTS[dis];"
    "[dis][ref]libvmaf=log_fmt=json:log_path={log}:n_threads={threads}"
    ":feature=name=motion\\\\:debug=true"
)
# libvmaf >= 3.2 names the per-frame motion `..._motion_sad_score`; older builds use
# `integer_motion`.
MOTION_KEYS = ("VMAF_integer_feature_motion_sad_score", "integer_motion")
TIMEOUT_S = 300


@dataclass
class Timing:
    clip: str
    frames: int
    reference_s: float
    ours_s: float
    reference_score: float
    our_score: float


def make_clip(ffmpeg: str, folder: Path, name: str, size: str, frames: int) -> Path:
    """Encode ``frames`` frames of lavfi source ``name`` at ``size`` as H.264 yuv420p."""
    source, extra = SOURCES[name]
    path = folder / f"{name}_{size}.mp4"
    command = [ffmpeg, "-y", "-nostats", "-loglevel", "error", "-f", "lavfi"]
    command += ["-i", source.format(size=size), "-frames:v", str(frames)]
    command += ["-vf", extra] if extra else []
    command += ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(command, check=True, timeout=TIMEOUT_S)
    return path


def reference_score(ffmpeg: str, clip: Path, log: Path, threads: int) -> float:
    """Open-Sora's score from ffmpeg + libvmaf: (mean motion + mean motion2) / 2."""
    command = [ffmpeg, "-nostats", "-loglevel", "error", "-r", "24", "-i", str(clip)]
    command += ["-r", "24", "-i", str(clip), "-lavfi", GRAPH.format(log=log, threads=threads)]
    command += ["-f", "null", "-"]
    subprocess.run(command, check=True, timeout=TIMEOUT_S)
    pooled = json.loads(log.read_text())["pooled_metrics"]
    motion = next(pooled[key]["mean"] for key in MOTION_KEYS if key in pooled)
    return (motion + pooled["integer_motion2"]["mean"]) / 2


def best_of(repeats: int, function):
    """``(fastest seconds, value)`` of ``repeats`` calls of ``function()``."""
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value


def time_clip(ffmpeg: str, clip: Path, frames: int, args: argparse.Namespace) -> Timing:
    """Time both ways on one clip, interleaved so that both see the same machine load."""
    log = clip.with_suffix(".json")
    config = MotionConfig()
    motion_score(clip, config)  # warm the page cache and numpy's first-call paths
    reference_s, reference = best_of(
        args.repeats, lambda: reference_score(ffmpeg, clip, log, args.threads)
    )
    ours_s, ours = best_of(args.repeats, lambda: motion_score(clip, config))
    if ours.num_frames != frames:
        logger.warning("%s: decoded %d frames, expected %d", clip.name, ours.num_frames, frames)
    return Timing(clip.stem, ours.num_frames, reference_s, ours_s, reference, ours.score)


def report(size: str, timings: list[Timing]) -> None:
    """One line per clip and a summary line for the size."""
    for t in timings:
        logger.info(
            "  %-22s ref %.3f s  ours %.3f s  x%.2f  score %.6f vs %.6f (|d| %.1e)",
            t.clip, t.reference_s, t.ours_s, t.reference_s / t.ours_s, t.reference_score,
            t.our_score, abs(t.reference_score - t.our_score),
        )  # fmt: skip
    clips, frames = len(timings), sum(t.frames for t in timings)
    reference_s = sum(t.reference_s for t in timings)
    ours_s = sum(t.ours_s for t in timings)
    worst = max(abs(t.reference_score - t.our_score) for t in timings)
    logger.info(
        "%s: reference %.3f s/clip (%.0f frames/s) | ours %.3f s/clip (%.0f frames/s) | "
        "ratio x%.2f | max |score diff| %.2e",
        size, reference_s / clips, frames / reference_s, ours_s / clips, frames / ours_s,
        reference_s / ours_s, worst,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["256x144", "1280x720"])
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--frames", type=int, default=72)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="libvmaf n_threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            clips = [make_clip(ffmpeg, Path(tmp), name, size, args.frames) for name in args.sources]
            timings = [time_clip(ffmpeg, clip, args.frames, args) for clip in clips]
            report(size, timings)


if __name__ == "__main__":
    main()
