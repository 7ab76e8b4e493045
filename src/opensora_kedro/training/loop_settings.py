"""What the shared training loop is told and what it reports: the task protocol, the loop's
settings from a parameter group, its position, a window of metrics, its result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


class TrainTask(Protocol):
    """What a job trains: its model, its data and its loss."""

    def build_model(self) -> nn.Module: ...

    def build_data(self, rank: int, world_size: int) -> tuple[Any, Any, Any]:
        """``(dataset, batch_sampler, collate_fn)``; the sampler has set_epoch/state_dict."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    # Optional: ``samples(model, folder) -> list[Path]`` writes the task's sample set of the
    # current weights (see :mod:`~opensora_kedro.training.samples`).


@dataclass(frozen=True)
class LoopSettings:
    """The loop's share of a training parameter group."""

    seed: int
    epochs: int
    max_steps: int | None
    accumulation_steps: int
    grad_clip: float | None
    log_every: int
    ckpt_every: int
    keep_n_latest: int
    ema_decay: float | None
    warmup_steps: int
    dtype: str
    plugin: str
    plugin_config: dict
    optim: dict
    num_workers: int = 0
    prefetch_factor: int | None = None
    compile: bool = False
    use_cosine_scheduler: bool = False
    lora: dict | None = None
    sample_every: int | None = None

    @classmethod
    def from_params(cls, params: dict, warmup_steps: int | None = None) -> LoopSettings:
        """Read the settings from a validated parameter group (diffusion stage or VAE)."""
        names = {f for f in cls.__dataclass_fields__ if f not in ("warmup_steps",)}
        values = {name: params[name] for name in names if name in params}
        values.setdefault("accumulation_steps", 1)
        values["log_every"] = effective_log_every(params)
        values["sample_every"] = (params.get("samples") or {}).get("every")
        warmup = params.get("warmup_steps", warmup_steps or 0)
        return cls(warmup_steps=warmup, **values)


POINTS_PER_RUN = 100  # metric points a run logs when log_every is left to the loop
LOG_EVERY_WITHOUT_MAX_STEPS = 10


def effective_log_every(params: dict) -> int:
    """``log_every``, or when unset (null) every ``max_steps / 100`` updates (at least 1) so a
    run of any length draws a curve of about 100 points (10 without max_steps)."""
    if params.get("log_every"):
        return int(params["log_every"])
    if not params.get("max_steps"):
        return LOG_EVERY_WITHOUT_MAX_STEPS
    return max(1, int(params["max_steps"]) // POINTS_PER_RUN)


@dataclass
class Running:
    """Where the loop is: epoch, micro-batches done in it, optimizer updates done in all."""

    epoch: int = 0
    step: int = 0
    update_step: int = 0


@dataclass
class MetricsWindow:
    """What the loop measured since its last metrics line. A task's loss parts are averaged
    per micro-batch, except ``tokens`` (a count), which becomes ``tokens_per_s``."""

    losses: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, parts: dict[str, float], samples: int) -> None:
        """One micro-batch's loss, its parts and its number of samples."""
        self.losses.append(loss)
        self.samples += samples
        for name, value in parts.items():
            if name == "tokens":
                self.tokens += int(value)
            else:
                self.parts[name] = self.parts.get(name, 0.0) + float(value)

    def mean_loss(self) -> float:
        """The mean loss of the window's micro-batches."""
        return sum(self.losses) / max(len(self.losses), 1)

    def metrics(self) -> dict[str, float]:
        """Loss, its parts, samples/s and (when counted) tokens/s."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        count = max(len(self.losses), 1)
        found = {"loss": self.mean_loss(), "samples_per_s": self.samples / elapsed}
        found.update({name: total / count for name, total in self.parts.items()})
        if self.tokens:
            found["tokens_per_s"] = self.tokens / elapsed
        return found


@dataclass
class TrainResult:
    """What a finished (or resumed and finished) run leaves behind."""

    checkpoint: str | None
    update_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
