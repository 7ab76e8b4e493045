"""Which tiny autoencoder keeps the demo's colours soonest: held-out colour / direction kept
against training steps and seconds, for the candidates conf/local could train.

Runs after ``make run`` (it reads the rendered demo clips and ``video_meta``). Each candidate
trains from scratch on single frames (80% of steps, batches of 8) and 9-frame clips (20%,
batches of 2), all resized to 64x64, with its reconstruction loss; every ``--every`` steps
the clips of every third 9-frame video (held out) are reconstructed from the posterior mean
and measured with the evaluation's own colour and direction readers.

.venv/bin/python benchmarks/bench_local_vae.py --steps 1000 --threads 2
.venv/bin/python benchmarks/bench_local_vae.py --candidates flux2d_shortcut --steps 400
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from opensora_kedro.models.vae.registry import build_vae
from opensora_kedro.video.decode import read_frames
from opensora_kedro.video.measure import dominant_colour, motion_direction

logger = logging.getLogger("bench_local_vae")
RAW = Path("data/01_raw/videos")
META = Path("data/02_intermediate/video_meta.parquet")
CAUSAL = {"block_out_channels": [8, 16, 16], "temporal_downsample": [False, False],
          "temporal_upsample": [False, False], "norm_num_groups": 4,
          "causal_norm": False}  # fmt: skip
FLUX2D = {"ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "norm_groups": 4}
# name: (type, config overrides, lr, L1 weight, L2 weight)
CANDIDATES = {
    "causal_l1_l2": ("tiny_vae", CAUSAL, 2e-3, 1.0, 2.0),  # conf/local until December 2026
    "causal_l2": ("tiny_vae", CAUSAL, 2e-3, 0.0, 1.0),
    "flux2d_l2": ("tiny_autoencoder_2d", {**FLUX2D, "latent_channels": 4}, 4e-3, 0.0, 1.0),
    "flux2d_shortcut": (
        "tiny_autoencoder_2d",
        {**FLUX2D, "latent_channels": 3, "residual_shortcut": True},
        4e-3,
        0.0,
        1.0,
    ),  # fmt: skip
}


def load_clips(frames: int = 9) -> list[torch.Tensor]:
    """The demo clips' first ``frames`` frames as ``3 x T x 64 x 64`` in [-1, 1]."""
    clips = []
    for name in pd.read_parquet(META)["path"]:
        video = torch.from_numpy(read_frames(RAW / Path(name).name)[:frames]).float()
        video = video.permute(0, 3, 1, 2) / 127.5 - 1  # T x 3 x H x W
        clips.append(F.interpolate(video, size=(64, 64), mode="area").permute(1, 0, 2, 3))
    return clips


def as_frames(video: torch.Tensor) -> np.ndarray:
    """``3 x T x H x W`` in [-1, 1] to uint8 ``T x H x W x 3``."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()


@torch.no_grad()
def kept(vae: torch.nn.Module, clips: list[torch.Tensor]) -> tuple[float, float]:
    """Shares of ``clips`` whose colour and direction survive the round trip."""
    vae.eval()
    colour = direction = 0
    for clip in clips:
        before, after = as_frames(clip), as_frames(vae(clip[None], sample=False)[0][0])
        colour += dominant_colour(before) == dominant_colour(after)
        direction += motion_direction(before) == motion_direction(after)
    vae.train()
    return colour / len(clips), direction / len(clips)


def run(name: str, clips: list[torch.Tensor], steps: int, every: int) -> list[dict]:
    """Train candidate ``name``; one row per measurement."""
    random.seed(0)
    torch.manual_seed(0)
    vae_type, config, lr, l1, l2 = CANDIDATES[name]
    vae = build_vae(vae_type, **config)
    optimizer = torch.optim.AdamW(vae.parameters(), lr)
    videos = [clip for clip in clips if clip.shape[1] == 9]
    held = videos[::3]
    train = [clip for clip in clips if not any(clip is h for h in held)]
    train_videos = [clip for clip in train if clip.shape[1] == 9]
    rows, seconds = [], 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        if random.random() < 0.8:
            x = torch.stack([random.choice(train)[:, :1] for _ in range(8)])
        else:
            x = torch.stack([random.choice(train_videos) for _ in range(2)])
        error = vae(x, sample=False)[0] - x
        loss = l1 * error.abs().mean() + l2 * error.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds += time.perf_counter() - start
        if step % every == 0:
            colour, direction = kept(vae, held)
            rows.append({"candidate": name, "step": step, "train_s": round(seconds, 1),
                         "colour_kept": colour, "direction_kept": direction,
                         "held_out_clips": len(held)})  # fmt: skip
            logger.info(json.dumps(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    clips = load_clips()
    rows = [row for name in args.candidates for row in run(name, clips, args.steps, args.every)]
    logger.info("\n%s", pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
