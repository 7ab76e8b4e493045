"""The batch-size probe's trial on a GPU: real training steps of a diffusion stage.

The stage's MMDiT (its size, ``cond_embed``, gradient checkpointing) goes through the same
:class:`~.loop.Trainer` a training job uses: the stage's Booster plugin and precision, its
optimizer (HybridAdam on a GPU) and EMA. A trial runs ``steps`` steps (the second is the first
with the optimizer's state already allocated, so its peak is the steady state's) on random
latents and text of the bucket's shape, and returns the peak memory allocated.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.diffusion import rectified_flow as rf
from opensora_kedro.models.mmdit import MMDiT, config_from_params
from opensora_kedro.models.vae.loading import autoencoder_structure
from opensora_kedro.runtime.tracking import MetricsLogger
from opensora_kedro.training.batch_probe import LatentGeometry, ProbeBucket
from opensora_kedro.training.loop import Trainer

logger = logging.getLogger(__name__)


def stage_geometry(params: DiffusionStageParams, vae_dir: str | None = None) -> LatentGeometry:
    """The token geometry of a diffusion stage: its VAE's compression, the model's patch and
    input width, the T5 length. ``vae_dir``: the exported VAE when ``ae.from_pretrained`` is
    null."""
    vae = autoencoder_structure(params.ae, vae_dir)
    patch, in_channels = params.model.patch_size, params.model.in_channels
    if in_channels != vae.latent_channels * patch**2:
        raise ValueError(
            f"model.in_channels {in_channels} is not the VAE's "
            f"{vae.latent_channels} latent channels x patch {patch}^2"
        )
    return LatentGeometry(
        spatial=vae.spatial_compression, temporal=vae.temporal_compression,
        causal=vae.is_causal, patch=patch, channels=vae.latent_channels,
        text_tokens=params.t5.max_length,
    )  # fmt: skip


class RandomLatentTask:
    """A diffusion stage's model and loss on random latents and text (no data, no VAE)."""

    def __init__(self, params: DiffusionStageParams) -> None:
        self.params = params

    def build_model(self) -> nn.Module:
        settings = self.params.grad_ckpt_settings if self.params.grad_checkpoint else None
        return MMDiT(config_from_params(self.params.model, settings))

    def build_data(self, rank: int, world_size: int) -> tuple[None, None, None]:
        return None, None, None  # the probe feeds batches itself

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Rectified-flow loss on a random batch of ``batch["shape"]``, as the stage trains."""
        model_params = self.params.model
        batch_size, channels, frames, height, width = batch["shape"]
        device = batch["device"]
        x0 = torch.randn(batch_size, channels, frames, height, width, device=device)
        txt = torch.randn(
            batch_size, self.params.t5.max_length, model_params.context_in_dim, device=device
        )
        y = torch.randn(batch_size, model_params.vec_in_dim, device=device)
        t = rf.sample_timesteps(batch_size, device=device)
        noise = torch.randn_like(x0)
        cond = None
        if model_params.cond_embed:
            cond = torch.zeros(batch_size, channels + 1, frames, height, width, device=device)
        velocity = model(rf.noise_input(x0, noise, t), txt, y, t, cond=cond)
        return rf.flow_loss(velocity.float(), rf.velocity_target(x0, noise).float()), {}


class TrainStepTrial:
    """``trial(bucket, batch) -> peak bytes`` for :func:`~.batch_probe.search_batch_sizes`.

    Call inside a process group (:func:`~.distributed.process_group`) on a CUDA device.
    """

    def __init__(self, params: DiffusionStageParams, steps: int = 2) -> None:
        self.steps = steps
        self._tmp = tempfile.TemporaryDirectory(prefix="batch-probe-")
        settings = params.model_copy(update={"max_steps": None, "compile": False})
        metrics = MetricsLogger(None, None, "", enabled=False)
        policy = None
        if params.plugin == "hybrid":  # as the diffusion job wraps the MMDiT
            from opensora_kedro.runtime.mmdit_policy import MMDiTPolicy

            policy = MMDiTPolicy()
        self.trainer = Trainer(
            RandomLatentTask(params), settings, Path(self._tmp.name), metrics, policy
        )

    def __call__(self, bucket: ProbeBucket, batch: int) -> int:
        device = self.trainer.device
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(self.steps):
            self.trainer.train_step({"shape": (batch, *bucket.latent_shape), "device": device})
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)

    def recover(self) -> None:
        """After an out-of-memory error: drop the failed step's gradients and cached blocks."""
        self.trainer.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()

    def close(self) -> None:
        """Free the model and optimizer."""
        del self.trainer
        gc.collect()
        torch.cuda.empty_cache()
        self._tmp.cleanup()


def _check_single_process(params: DiffusionStageParams) -> None:
    config = params.plugin_config
    group = config.tp_size * config.sp_size * config.pp_size
    if group > 1:
        raise RuntimeError(
            f"the probe runs in one process but plugin_config has tp*sp*pp = {group}; probe "
            "with --params '<stage>.plugin_config.sp_size=1,<stage>.plugin_config."
            "enable_sequence_parallelism=false' (sizes found so are a lower bound: sequence "
            "parallelism splits each sample's activations across its ranks)"
        )


def run_probe(
    stage: str, params: DiffusionStageParams, out_dir: str | Path, header: list[str]
) -> dict[str, Path]:
    """Probe every bucket of ``stage`` on this machine's first GPU; write the stage's
    ``bucket_config`` (``parameters_<stage>_probed.yml``) and the report (JSON, Markdown)
    into ``out_dir``. Returns the paths written."""
    from opensora_kedro.runtime.distributed import process_group
    from opensora_kedro.training.batch_probe import (
        ProbeSettings,
        bucket_config_yaml,
        probe_buckets,
        probed_bucket_config,
        report,
        report_markdown,
        search_batch_sizes,
    )

    if not torch.cuda.is_available():
        raise RuntimeError("the batch-size probe trains on a CUDA GPU; this machine has none")
    _check_single_process(params)
    probe = params.probe
    buckets = probe_buckets(params.bucket_config, stage_geometry(params))
    total = torch.cuda.get_device_properties(0).total_memory
    budget = int(total * probe.memory_fraction)
    device = {"name": torch.cuda.get_device_name(0), "memory_gib": round(total / 2**30, 1),
              "budget_gib": round(budget / 2**30, 1), "plugin": params.plugin,
              "dtype": params.dtype, "grad_checkpoint": params.grad_checkpoint}  # fmt: skip
    with process_group():
        # Beyond the budget the allocator raises OutOfMemoryError instead of growing.
        torch.cuda.set_per_process_memory_fraction(probe.memory_fraction)
        trial = TrainStepTrial(params, steps=probe.steps_per_trial)
        try:
            settings = ProbeSettings(budget_bytes=budget, max_batch=probe.max_batch)
            results = search_batch_sizes(buckets, trial, settings, trial.recover)
        finally:
            trial.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = [*header, f"on {device['name']} ({device['memory_gib']} GiB), budget "
              f"{device['budget_gib']} GiB ({probe.memory_fraction} of it), plugin "
              f"{params.plugin}, {params.dtype}, grad_checkpoint "
              f"{params.grad_checkpoint}"]  # fmt: skip
    paths = {"bucket_config": out / f"parameters_{stage}_probed.yml",
             "report_json": out / "report.json", "report_md": out / "report.md"}  # fmt: skip
    config = probed_bucket_config(buckets, results)
    paths["bucket_config"].write_text(bucket_config_yaml(stage, config, header))
    paths["report_json"].write_text(json.dumps(report(results, device), indent=1))
    paths["report_md"].write_text(report_markdown(results))
    return paths
