"""What the shared training loop is told and what it reports: the task protocol, its
position, a window of metrics, its result (its settings: ``training.params``)."""

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
