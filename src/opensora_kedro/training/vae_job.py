"""The VAE training job: Open-Sora's VAE loss and mixed video/image strategy on the shared loop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from opensora_kedro.config.schemas.vae import VaeTrainingParams
from opensora_kedro.data.clip_batches import clip_batches, fixed_bucket_keys
from opensora_kedro.data.clip_dataset import ClipDataset
from opensora_kedro.models.params import VaeModelParams
from opensora_kedro.models.vae.losses import VAELoss
from opensora_kedro.models.vae.registry import build_vae, load_vae_weights
from opensora_kedro.runtime.distributed import rank
from opensora_kedro.runtime.launcher import JobSpec
from opensora_kedro.training.export import train_and_export
from opensora_kedro.training.samples import fixed_rows, write_sample_set

logger = logging.getLogger(__name__)

LATENT_STAT_CLIPS = 32  # clips the exported latent scale is measured on


def build_model(model: VaeModelParams, grad_checkpoint: bool = False) -> nn.Module:
    """The configured autoencoder, with its starting weights when it has any."""
    vae = build_vae(model.type, **{"gradient_checkpointing": grad_checkpoint, **model.config})
    if model.from_pretrained and not model.from_scratch:
        load_vae_weights(vae, model.from_pretrained)
    return vae


def image_probability(ratio: float, rank: int, world_size: int) -> float:
    """Open-Sora's ``mixed_video_image``: rank 0 always trains on video and the other ranks
    make up the ratio (``N r / (N - 1)``); a single process uses ``ratio`` itself."""
    if world_size == 1:
        return ratio
    return 0.0 if rank == 0 else min(1.0, world_size * ratio / (world_size - 1))


class VaeTask:
    """Reconstruct bucketed clips; some steps train on the first frame alone (an image)."""

    def __init__(self, params: VaeTrainingParams, table: pd.DataFrame) -> None:
        self.params, self.table = params, table
        loss = params.vae_loss_config
        self.loss_fn = VAELoss(
            perceptual_loss_weight=loss.perceptual_loss_weight,
            kl_loss_weight=loss.kl_loss_weight,
            perceptual_weights_path=loss.perceptual_weights_path,
            l2_loss_weight=loss.l2_loss_weight,
            l1_loss_weight=loss.l1_loss_weight,
        )
        self.p_image = 0.0

    def build_model(self) -> nn.Module:
        """The autoencoder to train."""
        return build_model(self.params.model, self.params.grad_checkpoint)

    def build_data(self, rank: int, world_size: int):
        """Bucketed clips of the training split for this rank."""
        if self.params.mixed_strategy == "mixed_video_image":
            self.p_image = image_probability(self.params.mixed_image_ratio, rank, world_size)
        return clip_batches(self.table, self.params, rank, world_size)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Open-Sora's VAE loss of a batch (or of its first frames, for an image step)."""
        x = batch["video"]
        # Drawn from torch's RNG even when unused, so resumed runs stay in step.
        if float(torch.rand(())) < self.p_image:
            x = x[:, :, :1]
        reconstruction, posterior = model(x, sample=self.params.sample_posterior)
        terms = self.loss_fn(x, reconstruction, posterior)
        parts = {name: float(value.detach()) for name, value in terms.items() if name != "total"}
        # The terms are sums over a sample's elements (Open-Sora's scale), which change with
        # the bucket's frames and size; means per element compare from step to step.
        error = (reconstruction.detach() - x).float()
        parts |= {"l1_per_element": float(error.abs().mean()),
                  "mse_per_element": float(error.square().mean())}  # fmt: skip
        return terms["total"], parts

    def samples(self, model: nn.Module, folder: Path) -> list[Path]:
        """Reconstructions of fixed, seeded training clips, each beside its original."""
        options = self.params.samples
        rows = self.table.iloc[fixed_rows(len(self.table), options.count, options.seed)]
        dataset = ClipDataset(rows, seed=self.params.seed, fps_max=self.params.dataset.fps_max,
                              transform=self.params.dataset.transform_name)  # fmt: skip
        device = next(model.parameters()).device
        videos, labels = [], []
        for key in fixed_bucket_keys(rows, self.params):
            x = dataset[key]["video"].unsqueeze(0).to(device)
            reconstruction, _ = model(x, sample=self.params.sample_posterior)
            pair = torch.cat([x, reconstruction.clamp(-1, 1)], dim=-1)[0]  # side by side
            videos.append(((pair.float() + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu())
            labels.append("original | reconstruction")
        if not videos:
            logger.warning("no sample clip fits a bucket: no reconstructions this time")
            return []
        return write_sample_set([v.numpy() for v in videos], labels, folder, fps=8.0)


@torch.no_grad()
def latent_statistics(
    vae: nn.Module, table: pd.DataFrame, params: VaeTrainingParams, max_clips: int
) -> dict[str, float]:
    """Mean and standard deviation of the unscaled latent (posterior mean) over up to
    ``max_clips`` bucketed clips of ``table``.

    Diffusion expects latents of about unit variance; as for the released VAEs (Hunyuan's
    0.476986, DC-AE's 0.493), ``scaling_factor = 1 / std`` and ``shift_factor = mean`` come
    from data. Raises ValueError when no clip fits a bucket.
    """
    rows = table.head(max_clips)
    dataset = ClipDataset(rows, seed=params.seed, fps_max=params.dataset.fps_max,
                          transform=params.dataset.transform_name)  # fmt: skip
    config = vae.config
    latents = [
        (vae.encode(dataset[key]["video"].unsqueeze(0)) / config.scaling_factor
         + config.shift_factor).flatten()
        for key in fixed_bucket_keys(rows, params)
    ]  # fmt: skip
    if not latents:
        raise ValueError("no training clip fits a bucket: cannot measure the latent scale")
    values = torch.cat(latents).double()
    return {"mean": float(values.mean()), "std": float(values.std())}


def run(spec: JobSpec[VaeTrainingParams]) -> dict[str, Any]:
    """Job entry: train on the training rows handed over (the held-out clips already left
    out); rank 0 exports the weights (EMA when kept) and measures the latent statistics the
    export's scaling factor comes from."""
    params = spec.params
    train = pd.read_parquet(spec.inputs["training_table"])
    result = train_and_export(VaeTask(params, train), spec, f"{spec.name}.")
    if result["export"] and rank() == 0:
        vae = build_model(params.model).eval()
        load_vae_weights(vae, Path(result["export"]) / "model.safetensors", strict=True)
        result["latent"] = latent_statistics(vae, train, params, LATENT_STAT_CLIPS)
        logger.info("latent mean %.4f, std %.4f", result["latent"]["mean"],
                    result["latent"]["std"])  # fmt: skip
    return result
