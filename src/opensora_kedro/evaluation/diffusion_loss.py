"""Open-Sora v1.3's evaluation loss (``eval/loss/eval_loss.py``, brief §10) for the MMDiT.

Held-out clips are grouped by their training bucket ``(resolution, num_frames, aspect)``; in
every bucket the rectified-flow velocity MSE is measured at ``n`` fixed timesteps
``t_i = i / (n + 1)``, ``i = 1..n`` -- v1.3's ``linspace(0, num_timesteps, n + 2)[1:-1]`` in
our ``t ∈ [0, 1]`` units (1 = noise), i.e. evenly spaced and excluding the pure data and pure
noise ends. As in v1.3 the fixed ``t`` is *not* time-shifted (the shift only applies to sampled
``t``); ``time_shift=True`` evaluates at the shifted values instead.

Everything random is fixed, so the numbers are reproducible and comparable between checkpoints:
the latent is the VAE's posterior mean, the noise of a clip comes from a generator seeded by
``(seed, row index)`` and is shared by all ``t`` (differences between ``t`` are then not noise
draws), there is no caption dropout and the condition is text-to-video (``cond=None``, which a
``cond_embed`` model reads as the all-zero t2v condition, exactly what training builds for t2v).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.data.clip_batches import fixed_bucket_assignment, fixed_sample_key
from opensora_kedro.data.clip_dataset import ClipDataset, collate_clips
from opensora_kedro.diffusion import rectified_flow as rf

logger = logging.getLogger(__name__)

NUM_EVAL_TIMESTEPS = 10  # v1.3's num_eval_timesteps
BUCKET_COLUMNS = ["bucket_resolution", "bucket_num_frames", "bucket_aspect"]
LOSS_COLUMNS = ["bucket", "resolution", "num_frames", "aspect", "t", "t_model", "loss",
                "n_samples"]  # fmt: skip


class TextEmbeddings(Protocol):
    """What the loss needs of the text-embedding cache (:class:`EmbeddingCache` has it)."""

    def lookup(self, caption_hashes: list[str], encoder: str = "t5") -> Tensor: ...


def eval_timesteps(num_timesteps: int = NUM_EVAL_TIMESTEPS) -> Tensor:
    """``[i / (n + 1) for i in 1..n]`` as float64: v1.3's grid, ends excluded."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be at least 1, got {num_timesteps}")
    return torch.arange(1, num_timesteps + 1, dtype=torch.float64) / (num_timesteps + 1)


def fixed_noise(shape: tuple[int, ...], seed: int, index: int) -> Tensor:
    """The evaluation noise of row ``index``: independent of batching and of other rows."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
    return torch.randn(shape, generator=generator)


def bucket_label(resolution: str, num_frames: int, aspect: str) -> str:
    """A readable bucket name, e.g. ``"256px/33f/9:16"``."""
    return f"{resolution}/{int(num_frames)}f/{aspect}"


def _batches(assigned: pd.DataFrame, batch_size: int | None) -> Iterator[tuple[tuple, list]]:
    """``(bucket key, row labels)`` per batch, buckets in order of first appearance."""
    for bucket, rows in assigned.groupby(BUCKET_COLUMNS, sort=False):
        size = batch_size or int(rows["batch_size"].iloc[0])
        labels = list(rows.index)
        for start in range(0, len(labels), size):
            yield bucket, labels[start : start + size]


@torch.no_grad()
def _batch_losses(
    model: nn.Module,
    x0: Tensor,
    text: tuple[Tensor, Tensor],
    noise: Tensor,
    timesteps: Tensor,
    sigma_min: float,
) -> Tensor:
    """Per-sample MSE ``[len(timesteps), B]`` of one batch of latents at every timestep."""
    txt, y = text
    target = rf.velocity_target(x0, noise, sigma_min).float()
    losses = []
    for t in timesteps:
        t_batch = torch.full((x0.shape[0],), float(t), device=x0.device)
        velocity = model(rf.noise_input(x0, noise, t_batch, sigma_min), txt, y, t_batch)
        losses.append((velocity.float() - target).square().flatten(1).mean(dim=1))
    return torch.stack(losses)


def _model_timesteps(grid: Tensor, x0: Tensor, patch_size: int, time_shift: bool) -> Tensor:
    if not time_shift:
        return grid
    _, _, frames, height, width = x0.shape
    return rf.shift_timesteps(grid, rf.time_shift_alpha((height, width), frames, patch_size))


def _per_bucket(losses: dict[tuple, list[np.ndarray]], grid: Tensor, t_model: dict) -> pd.DataFrame:
    """Tidy rows (bucket, t) from each bucket's per-clip loss vectors over ``grid``."""
    rows = []
    for bucket, per_clip in losses.items():
        stacked = np.stack(per_clip)  # [clips, n_t]
        resolution, frames, aspect = bucket
        for i, t in enumerate(grid.tolist()):
            rows.append({"bucket": bucket_label(*bucket), "resolution": resolution,
                         "num_frames": int(frames), "aspect": aspect, "t": t,
                         "t_model": float(t_model[bucket][i]), "loss": float(stacked[:, i].mean()),
                         "n_samples": len(stacked)})  # fmt: skip
    return pd.DataFrame(rows, columns=LOSS_COLUMNS)


def diffusion_eval_loss(
    model: nn.Module,
    vae: nn.Module,
    text: TextEmbeddings,
    held: pd.DataFrame,
    params: DiffusionStageParams,
    num_timesteps: int = NUM_EVAL_TIMESTEPS,
    batch_size: int | None = None,
    time_shift: bool = False,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The rectified-flow loss of ``model`` on held-out clips, per bucket and timestep.

    Args:
        model: the MMDiT (``model(x_t, txt, y, t, cond=None)`` -> velocity).
        vae: the frozen autoencoder the model was trained on (``encode(video)``).
        text: the embedding cache; ``lookup(caption_hashes, "t5" | "clip")``.
        held: held-out training-table rows (``path``, ``num_frames``, ``height``, ``width``,
            ``fps``, ``caption_hash``), with a unique index.
        params: the stage's params; reads ``bucket_config``, ``seed``, ``dataset.fps_max``,
            ``dataset.transform_name``, ``model.patch_size`` (only with ``time_shift``) and
            ``sigma_min``.
        num_timesteps: how many fixed ``t`` (see :func:`eval_timesteps`).
        batch_size: clips per forward pass; ``None`` uses each bucket's training batch size.
            The result does not depend on it beyond float rounding.
        time_shift: feed the model the SD3-shifted ``t`` of each bucket's latent shape.

    Returns:
        ``(losses, summary)``: one row per (bucket, t) with columns :data:`LOSS_COLUMNS`
        (``loss`` is the mean over the bucket's clips), and ``{"loss": mean over every clip and
        t, "bucket_mean_loss": mean over buckets of their mean over t, "samples", "buckets"}``.

    Raises:
        ValueError: no held-out clip fits a bucket.
    """
    assigned = fixed_bucket_assignment(held, params)
    if assigned.empty:
        raise ValueError(f"none of the {len(held)} held-out clips fits a bucket of bucket_config")
    dataset = ClipDataset(held, seed=params.seed, fps_max=params.dataset.fps_max,
                          transform=params.dataset.transform_name)  # fmt: skip
    sigma_min, patch = params.sigma_min, params.model.patch_size
    weight = next(model.parameters())
    device, dtype = weight.device, weight.dtype
    grid = eval_timesteps(num_timesteps)
    model.eval()
    vae.to(device).eval()
    losses: dict[tuple, list[np.ndarray]] = {}
    t_model: dict[tuple, Tensor] = {}
    for bucket, labels in _batches(assigned, batch_size):
        batch = collate_clips([dataset[fixed_sample_key(i, assigned.loc[i])] for i in labels])
        with torch.no_grad():
            x0 = vae.encode(batch["video"].to(device), sample=False).to(dtype)
        hashes = held.loc[labels, "caption_hash"].tolist()
        txt, y = (text.lookup(hashes, name).to(device, dtype) for name in ("t5", "clip"))
        noise = torch.stack([fixed_noise(tuple(x0.shape[1:]), params.seed, i) for i in labels])
        t_model[bucket] = _model_timesteps(grid, x0, patch, time_shift)
        batch_losses = _batch_losses(
            model, x0, (txt, y), noise.to(device, dtype), t_model[bucket], sigma_min
        )
        losses.setdefault(bucket, []).extend(batch_losses.T.cpu().numpy())
    table = _per_bucket(losses, grid, t_model)
    return table, summarize(table)


def summarize(table: pd.DataFrame) -> dict[str, float]:
    """Overall numbers of a loss table: clip-weighted mean, bucket mean, counts."""
    per_bucket = table.groupby("bucket", sort=False).agg(loss=("loss", "mean"),
                                                          n=("n_samples", "first"))  # fmt: skip
    samples = int(per_bucket["n"].sum())
    summary = {
        "loss": float((per_bucket["loss"] * per_bucket["n"]).sum() / samples),
        "bucket_mean_loss": float(per_bucket["loss"].mean()),
        "samples": float(samples),
        "buckets": float(len(per_bucket)),
    }
    logger.info("eval loss %.5f over %d held-out clips in %d bucket(s)", summary["loss"],
                samples, len(per_bucket))  # fmt: skip
    return summary


def bucket_losses(table: pd.DataFrame) -> pd.DataFrame:
    """v1.3's one number per bucket: the mean over ``t`` of each bucket's loss."""
    return (
        table.groupby(["bucket", "resolution", "num_frames", "aspect"], sort=False)
        .agg(loss=("loss", "mean"), n_samples=("n_samples", "first"))
        .reset_index()
    )
