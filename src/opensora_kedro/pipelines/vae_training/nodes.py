"""Nodes of the ``vae_training`` pipeline: hand the training rows over, launch the training
job, then evaluate it."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from opensora_kedro.config.schemas.vae import VaeTrainingParams
from opensora_kedro.data.holdout import split_holdout
from opensora_kedro.evaluation.vae import evaluate_reconstruction
from opensora_kedro.runtime.launcher import launch, make_job_spec
from opensora_kedro.runtime.params import LauncherParams
from opensora_kedro.training import vae_job

logger = logging.getLogger(__name__)


def vae_training_rows(table: pd.DataFrame, params: VaeTrainingParams) -> pd.DataFrame:
    """The rows the job trains on: the clips the evaluation holds out are never trained on."""
    train, _ = split_holdout(table, params.eval.holdout_fraction)
    return train


def train_vae(
    job_table: str, params: VaeTrainingParams, launcher: LauncherParams, run_dir: str
) -> dict:
    """Train the autoencoder through the launcher on the handed-over rows (``job_table``, a
    Parquet file); resumes from ``run_dir``'s checkpoints."""
    spec = make_job_spec(vae_job.run, params, run_dir, {"training_table": job_table}, name="vae")
    result = launch(spec, launcher)
    logger.info("VAE: %d updates, last checkpoint %s", result["update_steps"], result["checkpoint"])
    config = dict(params.model.config)  # a copy: the export's scale is added below
    if "latent" in result:  # scale the exported latent to unit variance for diffusion
        config.update(scaling_factor=1.0 / result["latent"]["std"],
                      shift_factor=result["latent"]["mean"])  # fmt: skip
    model = {"type": params.model.type, "config": config}
    return {"weights": str(Path(result["export"]) / "model.safetensors"), "config": model}


def evaluate_vae(model_dir: str, table: pd.DataFrame, params: VaeTrainingParams):
    """PSNR / SSIM on held-out clips, and side-by-side reconstructions."""
    metrics, figure = evaluate_reconstruction(model_dir, table, params)
    return {name: {"value": value, "step": 0} for name, value in metrics.items()}, figure
