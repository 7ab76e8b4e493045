"""Scanner throughput: probe N demo clips serially and on every core.

.venv/bin/python benchmarks/bench_scan.py --clips 200
.venv/bin/python benchmarks/bench_scan.py --clips 32 --size 1280x720
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from opensora_kedro.config.schemas.data import DemoDataParams
from opensora_kedro.data.engine import EngineSettings
from opensora_kedro.data.scan import build_video_table
from opensora_kedro.datasets.video_folder import VideoFolderDataset
from opensora_kedro.pipelines.demo_data.nodes import plan_clips, render_clips

logger = logging.getLogger("bench_scan")
DEMO_PARAMS = {
    "num_images": 0, "sizes": [[256, 144], [144, 256], [192, 192], [320, 176]],
    "fps": [12, 24, 25, 30, 60], "lengths": [1, 9, 17, 33, 51, 65, 97, 130], "seed": 0,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", help="render every clip at WxH instead of the demo sizes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = VideoFolderDataset(str(Path(tmp) / "videos"))
        started = time.perf_counter()
        params = {**DEMO_PARAMS, "num_clips": args.clips}
        if args.size:
            params["sizes"] = [[int(side) for side in args.size.split("x")]]
        files, captions = render_clips(plan_clips(DemoDataParams.model_validate(params)), crf=20)
        dataset.save(files)
        logger.info("rendered %d clips in %.2f s", len(files), time.perf_counter() - started)
        folder = dataset.load()
        frames = 0
        for workers in (1, os.cpu_count() or 1):
            timings = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                engine = EngineSettings(workers=workers)
                meta, _ = build_video_table(folder, pd.DataFrame(captions), engine)
                timings.append(time.perf_counter() - started)
                frames = int(meta["num_frames"].sum())
            best = min(timings)
            logger.info(
                "workers=%d: %d clips (%d frames) in %.2f s best of %d (%.0f clips/s); all: %s",
                workers, len(meta), frames, best, args.repeats, len(meta) / best,
                ", ".join(f"{t:.2f}" for t in timings),
            )  # fmt: skip


if __name__ == "__main__":
    main()
