"""The diffusion training job: rectified flow on VAE latents of bucketed clips, text from the
embedding cache, per-sample conditioning; every stage runs this on the shared loop."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.data.clip_batches import clip_batches
from opensora_kedro.diffusion import rectified_flow as rf
from opensora_kedro.diffusion.denoiser import denoise, sampling_timesteps
from opensora_kedro.files import resolve_path
from opensora_kedro.models.mmdit import MMDiT, config_from_params
from opensora_kedro.models.mmdit_loading import load_pretrained_mmdit
from opensora_kedro.models.vae.loading import build_autoencoder, resolve_vae_source
from opensora_kedro.progress import PROGRESS_INTERVAL_S
from opensora_kedro.runtime.launcher import JobSpec
from opensora_kedro.sampling.generate import decode_videos
from opensora_kedro.sampling.references import build_conditions
from opensora_kedro.sampling.settings import target_size
from opensora_kedro.text.cache import EmbeddingCache
from opensora_kedro.training.export import train_and_export
from opensora_kedro.training.latent_cache import (
    CachedClipDataset,
    LatentCache,
    collate_cached,
    encode_moments,
    merge_moments,
    sample_latent,
    store_misses,
    vae_fingerprint,
)
from opensora_kedro.training.samples import fixed_rows, sample_shape, write_sample_set

logger = logging.getLogger(__name__)


class DiffusionTask:
    """Velocity prediction on noised latents (Open-Sora's rectified flow, §7.1-7.2)."""

    def __init__(
        self, params: DiffusionStageParams, table: pd.DataFrame, inputs: dict[str, str]
    ) -> None:
        self.params, self.table, self.inputs = params, table, inputs
        source = resolve_vae_source(params.ae, inputs.get("vae_model"))
        self.vae = build_autoencoder(source, params.ae)
        self.text = EmbeddingCache.open(inputs["text_embeddings"])
        self.hashes = table["caption_hash"].to_numpy()
        self.cache, self.vae_id = None, None
        self.cache_counts = {"hits": 0, "misses": 0, "batches": 0}
        self._cache_logged_at = time.monotonic()
        if params.dataset.type == "cached_video_text":
            if source.weights is None:
                raise ValueError("cached_video_text needs VAE weights to key the cache by")
            # The precision changes the latents (bf16 autocast on GPUs), so it is in the key.
            self.vae_id = vae_fingerprint(self.vae, source.weights, {"dtype": params.dtype})
            self.cache = LatentCache(params.dataset.latent_cache_dir)
            logger.info("latent cache %s (VAE %s)", self.cache.root, self.vae_id[:16])

    def build_model(self) -> nn.Module:
        """The MMDiT, from ``model.from_pretrained`` when set (the explicit choice: ours, or an
        Open-Sora / Flux file converted as it loads, with ``model.lora_path``'s adapter merged
        in), else from the parent stage's exported weights when there are any."""
        params = self.params.model
        config = config_from_params(params, self._ckpt_settings())
        explicit = params.from_pretrained
        parent = self.inputs.get("parent_model")
        if not explicit and not parent:
            return MMDiT(config)
        source = resolve_path(explicit, None) if explicit else Path(parent)
        # The stage's own adapter is trained on top (lora.pretrained_dir), not merged here.
        lora = params.lora_path if explicit else None
        model = load_pretrained_mmdit(
            config, source, strict=params.strict_load, liger_rope=params.use_liger_rope,
            dtype=torch.float32, lora_path=resolve_path(lora, None) if lora else None,
        )  # fmt: skip
        logger.info("started from %s", source)
        return model

    def _ckpt_settings(self) -> tuple[int, int] | None:
        if not self.params.grad_checkpoint:
            return None
        return self.params.grad_ckpt_settings or (0, 0)

    def build_data(self, rank: int, world_size: int):
        """Bucketed clips of the training table for this rank (cached posteriors when on)."""
        dataset, sampler, collate = clip_batches(self.table, self.params, rank, world_size)
        if self.cache is None:
            return dataset, sampler, collate
        fixed = self.params.dataset.latent_windows == "fixed"
        return CachedClipDataset(dataset, self.cache, self.vae_id, fixed), sampler, collate_cached

    def _text(self, indices: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        hashes = [self.hashes[i] for i in indices]
        t5, clip = (
            self.text.lookup(hashes, "t5").to(device),
            self.text.lookup(hashes, "clip").to(device),
        )
        for name, embedding in (("t5", t5), ("clip", clip)):
            # Caption dropout: some samples see the empty caption (classifier-free guidance).
            drop = torch.rand(len(hashes)) < self.params.dropout_ratio[name]
            embedding[drop.to(device)] = self.text.null(name).to(device, embedding.dtype)
        return t5, clip

    def _latents(self, batch: dict) -> torch.Tensor:
        """The batch's scaled latents, a fresh posterior sample per step (as Open-Sora trains)
        or the posterior mean (``sample_posterior: false``, for a VAE whose decoder was trained
        on means): encoded on the fly, or from cached posteriors (misses encoded and stored)."""
        self.vae.to(batch["index"].device)
        sample = self.params.sample_posterior
        if self.cache is None:
            with torch.no_grad():
                return self.vae.encode(batch["video"], sample=sample)
        encoded = encode_moments(self.vae, batch["video"]) if "video" in batch else None
        if encoded is not None:
            store_misses(self.cache, batch, encoded)
        self._count(len(batch["hit"]), len(batch["miss"]))
        return sample_latent(merge_moments(batch, encoded), self.vae.config, sample=sample)

    def _count(self, hits: int, misses: int) -> None:
        counts = self.cache_counts
        counts["hits"], counts["misses"] = counts["hits"] + hits, counts["misses"] + misses
        counts["batches"] += 1
        now = time.monotonic()
        if now - self._cache_logged_at >= PROGRESS_INTERVAL_S:  # with the progress lines
            self._cache_logged_at = now
            logger.info("latent cache: %d hits, %d misses so far", counts["hits"],
                        counts["misses"])  # fmt: skip

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Rectified-flow velocity loss on the VAE latents of a batch."""
        x0 = self._latents(batch)
        device = x0.device
        txt, y = self._text(batch["index"].tolist(), device)
        batch_size, _, frames, height, width = x0.shape
        patch = self.params.model.patch_size
        alpha = rf.time_shift_alpha((height, width), frames, patch)
        t = rf.shift_timesteps(rf.sample_timesteps(batch_size, device=device), alpha)
        noise = torch.randn_like(x0)
        cond = None
        if self.params.model.cond_embed:
            types = rf.sample_condition_types(
                batch_size, self.params.condition_config, latent_frames=frames
            )
            cond, _ = rf.prepare_visual_condition(x0, types)
        sigma_min = self.params.sigma_min
        velocity = model(rf.noise_input(x0, noise, t, sigma_min), txt, y, t, cond=cond)
        loss = rf.flow_loss(velocity, rf.velocity_target(x0, noise, sigma_min))
        return loss, {"tokens": batch_size * frames * (height // patch) * (width // patch)}

    def samples(self, model: nn.Module, folder: Path) -> list[Path]:
        """Generate the stage's sample set with ``model``: fixed, seeded captions of the
        training table (their embeddings are cached), text guidance, the first bucket's
        resolution; i2v stages condition on the first frame of each caption's clip. One clip
        at a time, in the model's dtype, to stay small beside the training state."""
        options = self.params.samples
        rows = fixed_rows(len(self.table), options.count, options.seed)
        parameter = next(model.parameters())
        place = {"device": parameter.device, "dtype": parameter.dtype}
        null_txt, null_y = (self.text.null(name)[None].to(**place) for name in ("t5", "clip"))
        resolution, frames = sample_shape(self.params.bucket_config, options.num_frames)
        patch = self.params.model.patch_size
        size = target_size(resolution, "1:1", self.vae.spatial_compression, patch)
        shape = (self.vae.latent_channels, *self.vae.latent_shape(frames, *size))
        timesteps = sampling_timesteps(options.num_steps, shape[2:], shape[1], patch)
        cond_type = "i2v_head" if self._conditions_on_frames() else "t2v"
        self.vae.to(place["device"])
        videos = []
        for number, row in enumerate(rows):
            txt, y = (self.text.lookup([self.hashes[row]], name).to(**place)
                      for name in ("t5", "clip"))  # fmt: skip
            seed = torch.Generator().manual_seed(options.seed + number)
            noise = torch.randn(shape, generator=seed)[None].to(**place)
            path = [str(self.table["path"].iloc[row])]
            cond = build_conditions(self.vae, path, cond_type, frames, size, 1)
            latents = denoise(model, noise, txt, y, null_txt, null_y, timesteps,
                              options.guidance,
                              cond=None if cond is None else cond.to(**place))  # fmt: skip
            videos += decode_videos(self.vae, latents, frames)
        labels = [f"{cond_type}: {text}" for text in self.table["text"].iloc[rows]]
        return write_sample_set(videos, labels, folder, fps=8.0)

    def _conditions_on_frames(self) -> bool:
        types = self.params.condition_config or {}
        return self.params.model.cond_embed and any(
            weight > 0 and kind.startswith("i2v") for kind, weight in types.items()
        )


def run(spec: JobSpec[DiffusionStageParams]) -> dict[str, Any]:
    """Job entry: train the stage ``spec.name`` (its metrics are prefixed with it); rank 0
    exports the weights (EMA when kept)."""
    params = spec.params
    task = DiffusionTask(params, pd.read_parquet(spec.inputs["training_table"]), spec.inputs)
    policy = None
    if params.plugin == "hybrid":  # the MMDiT's sequence parallelism (a slow import)
        from opensora_kedro.runtime.mmdit_policy import MMDiTPolicy

        policy = MMDiTPolicy()
    return train_and_export(task, spec, f"{spec.name}.", policy)
