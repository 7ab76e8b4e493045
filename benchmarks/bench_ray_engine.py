"""The per-clip engine: motion scoring on local threads vs Ray (1 and 2 workers), and Ray's
overhead per clip, in one run on the same clips.

.venv/bin/python benchmarks/bench_ray_engine.py --clips 48 --frames 60 --size 640x360
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from functools import partial
from pathlib import Path

import pandas as pd

from opensora_kedro.config.schemas.data import DemoDataParams
from opensora_kedro.data.engine import EngineSettings, PerClip, run_stage
from opensora_kedro.data.motion_table import _score_row
from opensora_kedro.data.params import RayParams
from opensora_kedro.datasets.video_folder import VideoFolderDataset
from opensora_kedro.pipelines.demo_data.nodes import plan_clips, render_clips
from opensora_kedro.video.motion import MotionConfig

logger = logging.getLogger("bench_ray_engine")


def _noop(row: dict) -> dict:
    return {"path": row["path"]}


def _timed(stage, rows, engine) -> float:
    started = time.perf_counter()
    results = run_stage(stage, rows, engine, "bench")
    assert len(results) == len(rows) and not any("reason" in r for r in results)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="640x360", help="WxH of every clip")
    parser.add_argument("--noop-rows", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        size = [int(side) for side in args.size.split("x")]
        plan = {"num_clips": args.clips, "num_images": 0, "sizes": [size], "fps": [24],
                "lengths": [args.frames], "seed": 0}  # fmt: skip
        files, _ = render_clips(plan_clips(DemoDataParams.model_validate(plan)), crf=20)
        dataset = VideoFolderDataset(str(Path(tmp) / "videos"))
        dataset.save(files)
        paths = [str(dataset.load().path(rel)) for rel in sorted(files)]
        rows = pd.DataFrame({"path": paths, "num_frames": args.frames}).to_dict("records")
        frames = args.clips * args.frames
        stage = PerClip(partial(_score_row, config=MotionConfig()))

        import ray

        from opensora_kedro.data.ray_engine import connect

        started = time.perf_counter()
        connect(RayParams(workers=2))
        logger.info("Ray start (local instance, 2 CPUs): %.1f s", time.perf_counter() - started)
        _timed(stage, rows[:4], EngineSettings(ray=RayParams(workers=2)))  # workers warm
        timings = {}
        for label, engine in [
            ("local, 1 thread", EngineSettings(workers=1)),
            ("local, 2 threads", EngineSettings(workers=2)),
            ("ray, 1 worker", EngineSettings(ray=RayParams(workers=1))),
            ("ray, 2 workers", EngineSettings(ray=RayParams(workers=2))),
        ]:
            timings[label] = _timed(stage, rows, engine)
            logger.info("motion, %-16s: %d clips (%d frames) in %.2f s: %.1f clips/s, %.0f "
                        "frames/s", label, args.clips, frames, timings[label],
                        args.clips / timings[label], frames / timings[label])  # fmt: skip
        logger.info("ray 2 workers vs 1: %.2fx; ray 2 workers vs local 2 threads: %.2fx",
                    timings["ray, 1 worker"] / timings["ray, 2 workers"],
                    timings["local, 2 threads"] / timings["ray, 2 workers"])  # fmt: skip
        noop_rows = [{"path": f"clip-{i}"} for i in range(args.noop_rows)]
        local = _timed(PerClip(_noop), noop_rows, EngineSettings(workers=2))
        remote = _timed(PerClip(_noop), noop_rows, EngineSettings(ray=RayParams(workers=2)))
        logger.info("no-op stage over %d rows: local %.3f s, ray %.2f s: Ray's overhead %.2f ms "
                    "per clip (%.2f s per stage run at this size)", args.noop_rows, local, remote,
                    1000 * (remote - local) / args.noop_rows, remote - local)  # fmt: skip
        ray.shutdown()


if __name__ == "__main__":
    main()
