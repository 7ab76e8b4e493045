"""The diffusion training job: rectified flow on VAE latents of bucketed clips, text from the
embedding cache, per-sample conditioning; every stage runs this on the shared loop."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from opensora_kedro.data.clip_batches import clip_batches
from opensora_kedro.models.mmdit import build_mmdit
from opensora_kedro.models.vae.registry import build_vae, load_vae_weights
from opensora_kedro.text.cache import EmbeddingCache
from opensora_kedro.training import rectified_flow as rf
from opensora_kedro.training.launcher import JobSpec
from opensora_kedro.training.loop import LoopSettings, train_and_export

logger = logging.getLogger(__name__)


def load_vae(model_dir: str) -> nn.Module:
    """The trained (frozen) autoencoder exported by ``vae_training``."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    vae = build_vae(config["type"], **config["config"]).eval().requires_grad_(False)
    load_vae_weights(vae, model_dir, strict=True)
    return vae


class DiffusionTask:
    """Velocity prediction on noised latents (Open-Sora's rectified flow, §7.1-7.2)."""

    def __init__(self, params: dict[str, Any], table: pd.DataFrame, inputs: dict[str, str]):
        self.params, self.table, self.inputs = params, table, inputs
        self.vae = load_vae(inputs["vae_model"])
        self.text = EmbeddingCache.open(inputs["text_embeddings"])
        self.hashes = table["caption_hash"].to_numpy()
        self.generator = None

    def build_model(self) -> nn.Module:
        """The MMDiT, from the parent stage's weights when there are any."""
        model = build_mmdit({**self.params["model"], "grad_ckpt_settings": self._ckpt_settings()})
        parent = self.inputs.get("parent_model")
        if parent:
            from safetensors.torch import load_file

            state = load_file(str(Path(parent) / "model.safetensors"))
            result = model.load_state_dict(state, strict=self.params["model"]["strict_load"])
            logger.info("started from %s (missing keys: %d)", parent, len(result.missing_keys))
        return model

    def _ckpt_settings(self) -> tuple[int, int] | None:
        return (
            tuple(self.params["grad_ckpt_settings"] or (0, 0))
            if self.params["grad_checkpoint"]
            else None
        )

    def build_data(self, rank: int, world_size: int):
        """Bucketed clips of the training table for this rank."""
        return clip_batches(self.table, self.params, rank, world_size)

    def _text(self, indices: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        hashes = [self.hashes[i] for i in indices]
        t5, clip = (
            self.text.lookup(hashes, "t5").to(device),
            self.text.lookup(hashes, "clip").to(device),
        )
        for name, embedding in (("t5", t5), ("clip", clip)):
            # Caption dropout: some samples see the empty caption (classifier-free guidance).
            drop = torch.rand(len(hashes)) < self.params["dropout_ratio"][name]
            embedding[drop.to(device)] = self.text.null(name).to(device, embedding.dtype)
        return t5, clip

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Rectified-flow velocity loss on the VAE latents of a batch."""
        video = batch["video"]
        self.vae.to(video.device)
        with torch.no_grad():
            x0 = self.vae.encode(video, sample=True)
        txt, y = self._text(batch["index"].tolist(), video.device)
        batch_size, _, frames, height, width = x0.shape
        alpha = rf.time_shift_alpha((height, width), frames, self.params["model"]["patch_size"])
        t = rf.shift_timesteps(rf.sample_timesteps(batch_size, device=video.device), alpha)
        noise = torch.randn_like(x0)
        cond = None
        if self.params["model"]["cond_embed"]:
            types = rf.sample_condition_types(
                batch_size, self.params["condition_config"], latent_frames=frames
            )
            cond, _ = rf.prepare_visual_condition(x0, types)
        velocity = model(
            rf.noise_input(x0, noise, t, self.params["sigma_min"]), txt, y, t, cond=cond
        )
        loss = rf.flow_loss(velocity, rf.velocity_target(x0, noise, self.params["sigma_min"]))
        return loss, {}


def run(spec: JobSpec) -> dict[str, Any]:
    """Job entry: train the stage; rank 0 exports the weights (EMA when kept)."""
    params = spec.params
    task = DiffusionTask(params, pd.read_parquet(spec.inputs["training_table"]), spec.inputs)
    return train_and_export(task, LoopSettings.from_params(params), spec, f"{params['name']}.")
