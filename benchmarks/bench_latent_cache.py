"""A tiny diffusion training step on CPU: clips encoded on the fly vs the latent cache.

    .venv/bin/python benchmarks/bench_latent_cache.py

Per shape of conf/local's 96px buckets (16:9), three ways to get the batch's latents, each
followed by the same training step (tiny MMDiT forward, loss, backward, AdamW update):

- ``on the fly`` (``dataset.type: video_text``): decode the MP4 clips, ``vae.encode(sample=True)``;
- ``miss`` (cached, first epoch): decode, encode the posterior, write it to the cache;
- ``hit`` (cached, later epochs): read the posterior, draw the sample.

The tiny VAE is randomly initialised: its cost, not its weights, matters here.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_diffusion_throughput import train_step  # the same step, this folder

from opensora_kedro.data.clip_dataset import ClipDataset, collate_clips
from opensora_kedro.data.sampler import SampleKey
from opensora_kedro.models.mmdit import build_mmdit
from opensora_kedro.models.vae.registry import build_vae
from opensora_kedro.training.latent_cache import (
    CachedClipDataset,
    LatentCache,
    collate_cached,
    encode_moments,
    merge_moments,
    sample_latent,
    store_misses,
)
from opensora_kedro.video.codec import encode_mp4

logger = logging.getLogger("bench_latent_cache")
# (batch, frames, height, width) of conf/local's 96px buckets (1, 9, 17 frames), 16:9 shape
SHAPES = [(8, 1, 64, 144), (4, 9, 64, 144), (2, 17, 64, 144)]
SOURCE = (34, 128, 288)  # frames, height, width of the source clips


def write_clips(folder: Path, count: int) -> pd.DataFrame:
    """``count`` random-texture MP4 clips of ``SOURCE`` size and their table."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        frames = rng.integers(0, 256, (*SOURCE, 3), dtype=np.uint8)
        path = folder / f"clip_{index}.mp4"
        path.write_bytes(encode_mp4(frames, 24))
        paths.append(str(path))
    return pd.DataFrame({"path": paths, "num_frames": SOURCE[0], "fps": 24.0})


def on_the_fly(clips, vae, keys) -> torch.Tensor:
    """``dataset.type: video_text``: decode and encode every clip."""
    batch = collate_clips([clips[key] for key in keys])
    with torch.no_grad():
        return vae.encode(batch["video"], sample=True)


def cached(dataset, vae, keys) -> torch.Tensor:
    """``cached_video_text``: read hits; decode, encode and store misses."""
    batch = collate_cached([dataset[key] for key in keys])
    encoded = encode_moments(vae, batch["video"]) if "video" in batch else None
    if encoded is not None:
        store_misses(dataset.cache, batch, encoded)
    return sample_latent(merge_moments(batch, encoded), vae.config)


def best_of(function, repeats: int, before=None) -> float:
    """The fastest of ``repeats`` timed calls (after a warm-up), ``before`` run untimed first."""
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        if before is not None:
            before()
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def bench_shape(shape, model, optimizer, vae, clips, dataset, repeats: int) -> None:
    """Log the latents' cost per way and the training step's, for one bucket shape."""
    batch, frames, height, width = shape
    keys = [SampleKey(i, frames, height, width, 2, 0) for i in range(batch)]
    cache = dataset.cache

    def clear() -> None:
        for path in cache.root.rglob("*.safetensors"):
            path.unlink()

    decode = best_of(lambda: collate_clips([clips[key] for key in keys]), repeats)
    latents = {
        "on the fly": best_of(lambda: on_the_fly(clips, vae, keys), repeats),
        "miss": best_of(lambda: cached(dataset, vae, keys), repeats, before=clear),
        "hit": best_of(lambda: cached(dataset, vae, keys), repeats),
    }
    x0, txt, y = cached(dataset, vae, keys), torch.randn(batch, 32, 64), torch.randn(batch, 64)
    step = best_of(lambda: train_step(model, optimizer, x0, txt, y), repeats)
    totals = {name: 1e3 * (seconds + step) for name, seconds in latents.items()}
    logger.info(
        "batch %d x %2d frames %dx%d: step alone %.1f ms, decode alone %.1f ms; "
        "step with latents on the fly %.1f ms "
        "(latents %.1f), cache miss %.1f ms (%.1f), cache hit %.1f ms (%.1f): hit %.1fx faster",
        batch, frames, height, width, 1e3 * step, 1e3 * decode,
        totals["on the fly"], 1e3 * latents["on the fly"], totals["miss"], 1e3 * latents["miss"],
        totals["hit"], 1e3 * latents["hit"], totals["on the fly"] / totals["hit"],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, vae = build_mmdit("tiny"), build_vae("tiny_vae").eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with tempfile.TemporaryDirectory() as tmp:
        table = write_clips(Path(tmp), max(shape[0] for shape in SHAPES))
        clips = ClipDataset(table, seed=0)
        dataset = CachedClipDataset(clips, LatentCache(Path(tmp) / "latents"), "bench" * 8)
        for shape in SHAPES:
            bench_shape(shape, model, optimizer, vae, clips, dataset, args.repeats)


if __name__ == "__main__":
    main()
