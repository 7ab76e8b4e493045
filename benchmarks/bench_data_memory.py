"""Peak memory of the data-processing steps at two collection sizes (it must not grow with them).

    .venv/bin/python benchmarks/bench_data_memory.py --clips 200 2000

Each size runs in a fresh process (peak RSS is per process): scan -> motion scores ->
filter -> training table -> bucket assignment, on demo clips rendered beforehand.
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench_data_memory")
DEMO = {
    "num_images": 0, "sizes": [[256, 144], [144, 256], [192, 192], [320, 176]],
    "fps": [12, 24, 25, 30, 60], "lengths": [1, 9, 17, 33, 51, 65, 97, 130], "seed": 0,
}  # fmt: skip


def render(folder: Path, clips: int) -> None:
    """Write ``clips`` demo clips and their captions under ``folder``."""
    from opensora_kedro.config.schemas.data import DemoDataParams
    from opensora_kedro.datasets.video_folder import VideoFolderDataset
    from opensora_kedro.pipelines.demo_data.nodes import plan_clips, render_clips

    params = DemoDataParams.model_validate({**DEMO, "num_clips": clips})
    files, captions = render_clips(plan_clips(params), crf=20)
    VideoFolderDataset(str(folder / "videos")).save(files)
    captions.to_csv(folder / "captions.csv", index=False)


def process(folder: Path) -> None:
    """The data-processing steps, then print peak RSS (MiB) and seconds for the parent."""
    import pandas as pd

    from opensora_kedro.data.bucket import assign_buckets
    from opensora_kedro.data.bucket_config import BucketConfig
    from opensora_kedro.data.engine import EngineSettings
    from opensora_kedro.data.filtering import filter_table
    from opensora_kedro.data.motion_table import score_motion
    from opensora_kedro.data.params import FilterParams, MotionParams
    from opensora_kedro.data.scan import build_video_table
    from opensora_kedro.data.training_table import build_training_table
    from opensora_kedro.datasets.video_folder import VideoFolderDataset

    started = time.perf_counter()
    videos = VideoFolderDataset(str(folder / "videos")).load()
    engine = EngineSettings(workers=2)
    meta, _ = build_video_table(videos, pd.read_csv(folder / "captions.csv"), engine)
    scores, _ = score_motion(meta, MotionParams(), engine)
    table, _ = filter_table(
        meta.merge(scores, on=["path", "file_size", "file_mtime_ns"]), FilterParams()
    )
    table = build_training_table(table, fps_max=24, vmaf=True)
    config = BucketConfig.from_dict({"96px": {1: (1.0, 8), 9: (1.0, 4), 17: (1.0, 2)}})
    assign_buckets(table, config, seed=0, epoch=0, fps_max=24)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write(f"{peak_mib:.1f} {time.perf_counter() - started:.1f} {len(table)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--process", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.process:
        logging.basicConfig(level=logging.WARNING)
        process(Path(args.process))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for clips in args.clips:
        with tempfile.TemporaryDirectory() as tmp:
            render(Path(tmp), clips)
            result = subprocess.run(
                [sys.executable, __file__, "--process", tmp],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            peak, seconds, rows = result.stdout.split()
            logger.info("%5d clips: peak RSS %s MiB, %s s, %s rows", clips, peak, seconds, rows)


if __name__ == "__main__":
    main()
