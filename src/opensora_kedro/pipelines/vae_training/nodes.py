"""Nodes of the ``vae_training`` pipeline: launch the training job, then evaluate it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pandas as pd

from opensora_kedro.evaluation.vae import evaluate_reconstruction
from opensora_kedro.training.launcher import JobSpec, launch

logger = logging.getLogger(__name__)


def job_spec(entry: str, params: dict, run_dir: str, table: pd.DataFrame) -> JobSpec:
    """A job spec for ``entry``: the table is handed to the workers as a file in the run folder."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    table_path = run / "training_table.parquet"
    table.to_parquet(table_path)
    active = mlflow.active_run()  # kedro-mlflow's run: the job logs its steps into it
    return JobSpec(
        entry=entry,
        params=params,
        output_dir=str(run),
        inputs={"training_table": str(table_path)},
        mlflow_tracking_uri=mlflow.get_tracking_uri(),
        mlflow_run_id=active.info.run_id if active else None,
        resume=params.get("resume", True),
    )


def train_vae(table: pd.DataFrame, params: dict, launcher: dict, run_dir: str) -> dict:
    """Train the autoencoder through the launcher; resumes from ``run_dir``'s checkpoints."""
    result = launch(
        job_spec("opensora_kedro.training.vae_job:run", params, run_dir, table), launcher
    )
    logger.info("VAE: %d updates, last checkpoint %s", result["update_steps"], result["checkpoint"])
    model = {"type": params["model"]["type"], "config": params["model"]["config"]}
    return {"weights": str(Path(result["export"]) / "model.safetensors"), "config": model}


def evaluate_vae(model_dir: str, table: pd.DataFrame, params: dict):
    """PSNR / SSIM on held-out clips, and side-by-side reconstructions."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    metrics, figure = evaluate_reconstruction(model_dir, config, table, params)
    return {name: {"value": value, "step": 0} for name, value in metrics.items()}, figure
