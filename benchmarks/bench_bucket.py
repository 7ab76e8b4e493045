"""Bucket assignment throughput: vectorised ``assign_buckets`` vs the row-by-row reference.

Runs on one core (affinity pinned, BLAS/OpenMP pools limited to one thread) over a synthetic
table with a realistic mix of sizes, frame rates, lengths and still images.

.venv/bin/python benchmarks/bench_bucket.py
.venv/bin/python benchmarks/bench_bucket.py --rows 1000000 --reference-rows 20000 --config stage1
"""

from __future__ import annotations

import os

# Before numpy is imported: its thread pools read these once.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from opensora_kedro.data.bucket import assign_buckets  # noqa: E402
from opensora_kedro.data.bucket_config import BucketConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference lives in tests/
from tests.data.bucket_reference import assign_buckets_reference  # noqa: E402

logger = logging.getLogger("bench_bucket")

# (height, width) of common sources and their share; 256x144 is below 256px's 0.8 area gate.
SIZES = [
    ((1080, 1920), 0.30), ((720, 1280), 0.20), ((2160, 3840), 0.05), ((480, 854), 0.10),
    ((360, 640), 0.08), ((144, 256), 0.04), ((1920, 1080), 0.08), ((1280, 720), 0.05),
    ((1024, 1024), 0.04), ((512, 512), 0.03), ((1080, 1440), 0.03),
]  # fmt: skip
FPS = [(23.976, 0.2), (24.0, 0.2), (25.0, 0.15), (29.97, 0.15), (30.0, 0.15), (50.0, 0.05),
       (60.0, 0.1)]  # fmt: skip


def _frames(first: int, last: int, step: int, prob: float, size: int) -> dict[int, list]:
    return {t: [prob, size] for t in range(first, last + 1, step)}


def open_sora_config(name: str) -> dict:
    """Open-Sora's stage1 / stage2_i2v ``bucket_config`` (reference brief §1.3), YAML-shaped."""
    if name == "stage1":
        video = {**_frames(5, 33, 4, 1.0, 12), **_frames(37, 65, 4, 1.0, 6),
                 **_frames(69, 97, 4, 1.0, 4), **_frames(101, 129, 4, 1.0, 3)}  # fmt: skip
        return {"256px": {1: [1.0, 45], **video}, "768px": {1: [0.5, 13]}, "1024px": {1: [0.5, 7]}}
    if name == "stage2_i2v":
        low = {**_frames(5, 33, 4, 1.0, 80), **_frames(37, 65, 4, 1.0, 40),
               **_frames(69, 97, 4, 1.0, 28), **_frames(101, 129, 4, 1.0, 23)}  # fmt: skip
        high = {**_frames(5, 33, 4, 0.5, 10), **_frames(37, 65, 4, 0.5, 5),
                **_frames(69, 97, 4, 0.5, 3), **_frames(101, 129, 4, 0.5, 2)}  # fmt: skip
        return {"256px": {1: [1.0, 195], **low}, "768px": {1: [0.5, 38], **high}}
    raise ValueError(f"unknown config {name!r}")


def synthetic_table(rows: int, seed: int) -> pd.DataFrame:
    """20% still images (fps NaN), the rest clips of 0.2-20 s at common frame rates."""
    rng = np.random.default_rng(seed)
    sizes = np.array([hw for hw, _ in SIZES])[
        rng.choice(len(SIZES), rows, p=[share for _, share in SIZES])
    ]
    fps = np.array([f for f, _ in FPS])[rng.choice(len(FPS), rows, p=[share for _, share in FPS])]
    seconds = np.exp(rng.uniform(np.log(0.2), np.log(20.0), rows))
    image = rng.random(rows) < 0.2
    return pd.DataFrame(
        {
            "path": [f"clip_{i:07d}.mp4" for i in range(rows)],
            "num_frames": np.where(image, 1, np.maximum(1, (seconds * fps).astype(np.int64))),
            "height": sizes[:, 0],
            "width": sizes[:, 1],
            "fps": np.where(image, np.nan, fps),
        }
    )


def best_time(run: Callable[[], pd.DataFrame], repeats: int) -> tuple[float, list[float]]:
    """Best and all wall times of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
        del result  # free before the next call so deallocation is not timed
    return min(times), times


def pin_one_core() -> str:
    """Restrict this process (and numpy's pools) to one core; returns what was done."""
    done = []
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        done.append(f"affinity {sorted(os.sched_getaffinity(0))}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        done.append("threadpoolctl not installed (env vars only)")
    else:
        threadpool_limits(1)
        done.append("threadpoolctl limit 1")
    return ", ".join(done)


def bench(name: str, table: pd.DataFrame, args: argparse.Namespace) -> None:
    """Time both implementations for one config and check they agree on the slice."""
    config = BucketConfig.from_dict(open_sora_config(name))
    run = {"config": config, "seed": 42, "epoch": 0, "fps_max": 24}
    assign_buckets(table.head(1000), **run)  # warm-up: imports, caches
    fast, times = best_time(lambda: assign_buckets(table, **run), args.repeats)
    piece = table.iloc[: args.reference_rows]
    slow, _ = best_time(lambda: assign_buckets_reference(piece, **run), 1)
    pd.testing.assert_frame_equal(
        assign_buckets(piece, **run), assign_buckets_reference(piece, **run)
    )
    out = assign_buckets(table, **run)
    shares = out.bucket_resolution.value_counts(normalize=True, dropna=False).round(3)
    reasons = out.skip_reason.value_counts().to_dict()
    logger.info("%s: %d buckets; resolution shares %s; skipped %s", name, config.num_bucket,
                shares.to_dict(), reasons)  # fmt: skip
    fast_rate, slow_rate = len(table) / fast, len(piece) / slow
    logger.info(
        "%s: vectorised %d rows in %.3f s best of %d (%.2fM rows/s; all: %s)",
        name, len(table), fast, args.repeats, fast_rate / 1e6, ", ".join(f"{t:.3f}" for t in times),
    )  # fmt: skip
    logger.info(
        "%s: row-by-row %d rows in %.3f s (%.0f rows/s); vectorised is %.0fx faster; "
        "results identical on the slice",
        name, len(piece), slow, slow_rate, fast_rate / slow_rate,
    )  # fmt: skip


def main() -> None:
    """Parse arguments, build the table, run the configs."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", choices=["stage1", "stage2_i2v", "all"], default="all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("opensora_kedro").setLevel(logging.WARNING)  # one line per call otherwise
    logger.info("one core: %s", pin_one_core())
    table = synthetic_table(args.rows, args.seed)
    logger.info("table: %d rows, %.0f%% images", len(table), 100 * table.fps.isna().mean())
    for name in ["stage1", "stage2_i2v"] if args.config == "all" else [args.config]:
        bench(name, table, args)


if __name__ == "__main__":
    main()
