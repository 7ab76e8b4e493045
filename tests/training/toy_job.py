"""A tiny regression job for the launcher and loop tests: real sampler, real Booster, fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from opensora_kedro.data.sampler import VariableShapeBatchSampler
from opensora_kedro.runtime.distributed import rank
from opensora_kedro.runtime.launcher import JobSpec
from opensora_kedro.runtime.params import PluginConfigParams
from opensora_kedro.runtime.tracking import MetricsLogger
from opensora_kedro.training.loop import Trainer
from opensora_kedro.training.params import LoopParams, VideoDatasetParams

ROWS = 64


class _Dataset(torch.utils.data.Dataset):
    def __getitem__(self, key):
        generator = torch.Generator().manual_seed(int(key.index))
        x = torch.randn(8, generator=generator)
        return {"x": x, "y": x.sum(dim=0, keepdim=True), "index": int(key.index)}


def _collate(items):
    return {
        "x": torch.stack([item["x"] for item in items]),
        "y": torch.stack([item["y"] for item in items]),
        "index": [item["index"] for item in items],
    }


def _assignment(epoch: int, rows: int = ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        {"bucket_resolution": "toy", "bucket_num_frames": 1, "bucket_aspect": "1:1",
         "bucket_height": 1, "bucket_width": 1, "batch_size": 4, "sampling_interval": 1},
        index=range(rows),
    )  # fmt: skip


class ToyParams(LoopParams):
    """The loop's settings, and the toy task's own knobs."""

    dataset: VideoDatasetParams = VideoDatasetParams()
    bucket_config: dict = {}
    plugin_config: PluginConfigParams = PluginConfigParams()
    ema_decay: float | None = None  # 0 allowed: the EMA is then the last weights
    warmup_steps: int = 0
    toy_hidden: int = 16
    toy_rows: int = ROWS
    fail_at_loss: bool = False
    step_sleep: float = 0.0

    @property
    def warmup(self) -> int:
        return self.warmup_steps


class ToyTask:
    """Linear regression with dropout and input noise: uses torch's RNG every step."""

    def __init__(self, params: ToyParams) -> None:
        self.params = params

    def build_model(self) -> nn.Module:
        hidden = self.params.toy_hidden
        return nn.Sequential(nn.Linear(8, hidden), nn.Dropout(0.1), nn.Linear(hidden, 1))

    def build_data(self, rank: int, world_size: int):
        rows = self.params.toy_rows
        sampler = VariableShapeBatchSampler(
            lambda epoch: _assignment(epoch, rows), num_replicas=world_size, rank=rank,
            seed=self.params.seed,
        )  # fmt: skip
        return _Dataset(), sampler, _collate

    def loss(self, model, batch):
        if self.params.fail_at_loss:
            raise ValueError("the toy task was told to fail")
        time.sleep(self.params.step_sleep)  # lets the fault test kill mid-run
        x = batch["x"] + 0.01 * torch.randn_like(batch["x"])
        loss = nn.functional.mse_loss(model(x), batch["y"])
        return loss, {"tokens": x.numel(), "abs_error": float((model(x) - batch["y"]).abs().mean())}


def run(spec: JobSpec[ToyParams]) -> dict:
    """The job entry: train, then return the checkpoint and the per-step losses."""
    settings = spec.params
    metrics = MetricsLogger(spec.mlflow_tracking_uri, spec.mlflow_run_id, "toy.", rank() == 0)
    trainer = Trainer(ToyTask(spec.params), settings, Path(spec.output_dir), metrics)
    if settings.resume:
        trainer.resume()
    else:
        trainer.discard_checkpoints()
    result = trainer.fit()
    if rank() == 0:
        weights = {k: v.tolist() for k, v in trainer.module.state_dict().items()}
        (Path(spec.output_dir) / "weights.json").write_text(json.dumps(weights))
    return {
        "checkpoint": result.checkpoint,
        "update_steps": result.update_steps,
        "history": result.history,
        "dtype": settings.dtype,
    }
