"""Training throughput of the tiny MMDiT (conf/local's size) on CPU: samples/s and tokens/s.

    .venv/bin/python benchmarks/bench_diffusion_throughput.py

One step = forward, rectified-flow loss, backward and an AdamW update, on latents of the
shapes conf/local's buckets give (tiny VAE: 8x spatial, 4x temporal, 4 channels; patch 2).
The VAE encode of the clips is timed separately: it runs in every training step too.
"""

from __future__ import annotations

import argparse
import logging
import time
from functools import partial

import torch

from opensora_kedro.diffusion import rectified_flow as rf
from opensora_kedro.models.mmdit import build_mmdit
from opensora_kedro.models.vae.registry import build_vae

logger = logging.getLogger("bench_diffusion_throughput")
# (batch, frames, height, width) of conf/local's 96px buckets (1, 9, 17 frames), 16:9 shape
SHAPES = [(8, 1, 64, 144), (4, 9, 64, 144), (2, 17, 64, 144)]


def best_of(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def train_step(model, optimizer, x0, txt, y) -> None:
    """One rectified-flow training step on latents ``x0``."""
    t = rf.sample_timesteps(x0.shape[0])
    noise = torch.randn_like(x0)
    velocity = model(rf.noise_input(x0, noise, t), txt, y, t)
    rf.flow_loss(velocity, rf.velocity_target(x0, noise)).backward()
    optimizer.step()
    optimizer.zero_grad()


@torch.no_grad()
def encode(vae, video) -> torch.Tensor:
    return vae.encode(video)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, vae = build_mmdit("tiny"), build_vae("tiny_vae").eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for batch, frames, height, width in SHAPES:
        video = torch.rand(batch, 3, frames, height, width) * 2 - 1
        x0 = encode(vae, video)
        txt, y = torch.randn(batch, 32, 64), torch.randn(batch, 64)
        seconds = best_of(partial(train_step, model, optimizer, x0, txt, y), args.repeats)
        encode_seconds = best_of(partial(encode, vae, video), args.repeats)
        tokens = batch * x0.shape[2] * (x0.shape[3] // 2) * (x0.shape[4] // 2)
        logger.info(
            "batch %d x %d frames %dx%d: step %.1f ms (%.1f samples/s, %.0f image tokens/s), "
            "VAE encode %.1f ms", batch, frames, height, width, 1e3 * seconds, batch / seconds,
            tokens / seconds, 1e3 * encode_seconds,
        )  # fmt: skip


if __name__ == "__main__":
    main()
