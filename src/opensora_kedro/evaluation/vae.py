"""Reconstruction quality of a trained VAE on held-out clips, at their training bucket shape."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from opensora_kedro.config.schemas.vae import VaeTrainingParams
from opensora_kedro.data.clip_batches import fixed_bucket_keys
from opensora_kedro.data.clip_dataset import ClipDataset
from opensora_kedro.data.holdout import split_holdout
from opensora_kedro.evaluation.frames import as_uint8_frames
from opensora_kedro.evaluation.reconstruction import reconstruction_metrics, side_by_side
from opensora_kedro.models.vae.loading import load_exported_autoencoder
from opensora_kedro.video.measure import dominant_colour, motion_direction

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_reconstruction(
    model_dir: str, table: pd.DataFrame, params: VaeTrainingParams
) -> tuple[dict[str, float], Any]:
    """Mean PSNR (dB) and SSIM over held-out clips, the share of clips whose measured colour and
    motion direction survive the round trip (``colour_kept`` / ``direction_kept``: what the
    prompt-following figures can reach at most on the demo domain), and a figure of
    side-by-side frames."""
    _, held = split_holdout(table, params.eval.holdout_fraction)
    held = held.head(params.eval.max_clips)
    vae = load_exported_autoencoder(model_dir)
    dataset = ClipDataset(held, seed=params.seed, fps_max=params.dataset.fps_max,
                          transform=params.dataset.transform_name)  # fmt: skip
    scores, images = [], []
    for key in fixed_bucket_keys(held, params):
        video = dataset[key]["video"].unsqueeze(0)
        # As trained: a VAE trained on its posterior means has an untrained posterior spread.
        reconstruction = vae(video, sample=params.sample_posterior)[0].clamp(-1, 1)
        scores.append({**reconstruction_metrics(video, reconstruction),
                       **_kept(video[0], reconstruction)})  # fmt: skip
        if len(images) < params.eval.images:
            images.append(side_by_side(video, reconstruction, frames=3))
    if not scores:
        raise ValueError("no held-out clip fits a bucket; raise vae_training.eval.holdout_fraction")
    metrics = {name: float(np.mean([s[name] for s in scores])) for name in scores[0]}
    metrics["clips"] = float(len(scores))
    logger.info(
        "VAE on %d held-out clips: PSNR %.2f dB, SSIM %.4f",
        len(scores),
        metrics["psnr"],
        metrics["ssim"],
    )
    return metrics, _figure(images)


def _kept(video: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, float]:
    """1.0 where the reconstruction measures the same colour / direction as the clip."""
    before, after = as_uint8_frames(video), as_uint8_frames(reconstruction)
    return {
        "colour_kept": float(dominant_colour(before) == dominant_colour(after)),
        "direction_kept": float(motion_direction(before) == motion_direction(after)),
    }


def _figure(images: list[np.ndarray]):
    import matplotlib

    matplotlib.use("Agg")  # headless: the figure is only saved
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, max(len(images), 1), figsize=(4 * max(len(images), 1), 5), squeeze=False
    )
    for axis, image in zip(axes[0], images, strict=False):
        axis.imshow(image)
        axis.set_title("original | reconstruction", fontsize=9)
    for axis in axes[0]:
        axis.axis("off")
    figure.tight_layout()
    return figure
