"""A job's whole run: train (resuming unless told not to), then export the weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from opensora_kedro.data.table_paths import table_fingerprint
from opensora_kedro.models.lora import base_model, is_lora, merged_model, save_adapter
from opensora_kedro.runtime.distributed import rank
from opensora_kedro.runtime.launcher import JobSpec
from opensora_kedro.runtime.tracking import MetricsLogger
from opensora_kedro.training.loop import Trainer
from opensora_kedro.training.loop_settings import TrainTask
from opensora_kedro.training.params import LoopParams, LoraParams

logger = logging.getLogger(__name__)


def train_and_export(
    task: TrainTask, spec: JobSpec[LoopParams], metrics_prefix: str, policy: Any = None
) -> dict:
    """What every job does with its task: train (resuming unless told not to), then rank 0
    exports the weights (the EMA copy when kept) as ``export/model.safetensors`` (under LoRA
    also ``export/lora/``: see :func:`_export_lora`). ``policy``:
    the shardformer policy for the hybrid plugin (see :func:`~.booster.make_plugin`)."""
    from safetensors.torch import save_file

    metrics = MetricsLogger(
        spec.mlflow_tracking_uri, spec.mlflow_run_id, metrics_prefix, rank() == 0
    )
    settings = spec.params
    trainer = Trainer(task, settings, Path(spec.output_dir), metrics, policy)
    table = spec.inputs.get("training_table")
    if table:
        trainer.data_fingerprint = table_fingerprint(pd.read_parquet(table))
    if settings.resume:
        trainer.resume(force=settings.force_resume)
    else:
        trainer.discard_checkpoints()
    result = trainer.fit()  # ends with a checkpoint: the EMA is whole on every rank
    export = Path(spec.output_dir) / "export"
    adapter = None
    lora = is_lora(trainer.module)
    weights = None if trainer.ema is not None or lora else trainer.model_state()  # collective
    if rank() == 0:
        model = trainer.ema if trainer.ema is not None else trainer.module
        export.mkdir(parents=True, exist_ok=True)
        if lora:
            model, adapter = _export_lora(model, export, settings.lora)
        state = weights if weights is not None else model.state_dict()
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(state, str(export / "model.safetensors"))
    return {"checkpoint": result.checkpoint, "export": str(export), "lora": adapter,
            "update_steps": result.update_steps, "history": result.history}  # fmt: skip


def _export_lora(model: nn.Module, export: Path, lora: LoraParams) -> tuple[nn.Module, str | None]:
    """Write the adapters to ``export/lora`` (safetensors); return the weights to export
    (merged, or the base) and the adapter folder that goes with them (None once merged)."""
    folder = save_adapter(model, export / "lora")
    if lora.merge:
        logger.info("LoRA: exporting merged weights (adapters also in %s)", folder)
        return merged_model(model), None
    logger.info("LoRA: exporting the base weights with the adapters in %s", folder)
    return base_model(model), str(folder)
