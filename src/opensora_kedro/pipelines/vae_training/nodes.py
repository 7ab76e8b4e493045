"""Nodes of the ``vae_training`` pipeline: launch the training job, then evaluate it."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from opensora_kedro.evaluation.vae import evaluate_reconstruction
from opensora_kedro.training import vae_job
from opensora_kedro.training.launcher import launch, make_job_spec

logger = logging.getLogger(__name__)


def train_vae(table: pd.DataFrame, params: dict, launcher: dict, run_dir: str) -> dict:
    """Train the autoencoder through the launcher; resumes from ``run_dir``'s checkpoints."""
    result = launch(make_job_spec(vae_job.run, params, run_dir, table), launcher)
    logger.info("VAE: %d updates, last checkpoint %s", result["update_steps"], result["checkpoint"])
    config = dict(params["model"]["config"])
    if "latent" in result:  # scale the exported latent to unit variance for diffusion
        config.update(scaling_factor=1.0 / result["latent"]["std"],
                      shift_factor=result["latent"]["mean"])  # fmt: skip
    model = {"type": params["model"]["type"], "config": config}
    return {"weights": str(Path(result["export"]) / "model.safetensors"), "config": model}


def evaluate_vae(model_dir: str, table: pd.DataFrame, params: dict):
    """PSNR / SSIM on held-out clips, and side-by-side reconstructions."""
    metrics, figure = evaluate_reconstruction(model_dir, table, params)
    return {name: {"value": value, "step": 0} for name, value in metrics.items()}, figure
