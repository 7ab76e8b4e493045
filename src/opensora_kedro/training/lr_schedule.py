"""Open-Sora's learning-rate schedule (brief §7.3): linear warm-up, then constant or cosine.

Open-Sora's ``LinearWarmupLR(initial_lr, warmup_steps)`` sets, at scheduler step ``k``,
``lr_k = lr0 + (k + 1) / (W + 1) * (lr - lr0)`` for ``k < W`` and the peak ``lr`` after;
``W = 0`` means a constant LR. ``train.py`` passes ``initial_lr=1e-6``.

With ``use_cosine_scheduler`` Open-Sora switches to ColossalAI's ``CosineAnnealingWarmupLR``
over ``epochs * steps_per_epoch``. Here the cosine follows the *same* warm-up ramp as above
(ColossalAI ramps from 0 as ``(k + 1) / W * lr``) and then decays in closed form from the
peak to ``eta_min`` at ``total_steps``, staying there after (torch's closed form would rise
again).

Every LR is a closed-form function of the step, so :meth:`WarmupLR.set_step` fast-forwards
exactly, which is what Open-Sora's ``update_warmup_steps`` resume does with
``lr_scheduler.step(start_epoch * steps_per_epoch + start_step)``.
"""

from __future__ import annotations

import logging
import math

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

logger = logging.getLogger(__name__)

OPEN_SORA_WARMUP_START_LR = 1e-6


class WarmupLR(LRScheduler):
    """Linear warm-up from ``warmup_start_lr`` to each group's LR, then constant or cosine.

    A torch ``LRScheduler``: call :meth:`step` after each optimizer update. Its
    ``state_dict()`` holds only numbers and lists (tensors if the LRs are tensors), so
    :mod:`opensora_kedro.training.state_io` stores it. ``load_state_dict`` restores the
    schedule's settings as well as its position, as torch schedulers do.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 0,
        warmup_start_lr: float = OPEN_SORA_WARMUP_START_LR,
        *,
        total_steps: int | None = None,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps is not None and total_steps <= warmup_steps:
            raise ValueError(
                f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})"
            )
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_lr = float(warmup_start_lr)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int) -> list[float]:
        """Each param group's LR at scheduler step ``step`` (0 = the first update)."""
        return [self._lr(float(peak), step) for peak in self.base_lrs]

    def _lr(self, peak: float, step: int) -> float:
        if step < self.warmup_steps:
            fraction = (step + 1) / (self.warmup_steps + 1)
            return self.warmup_start_lr + fraction * (peak - self.warmup_start_lr)
        if self.total_steps is None:
            return peak
        span = self.total_steps - self.warmup_steps
        progress = min(step - self.warmup_steps, span) / span
        return self.eta_min + (peak - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2

    def get_lr(self) -> list[float]:
        """The LRs for the current ``last_epoch`` (torch's scheduler protocol)."""
        return self.lr_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float]:
        # torch uses this for the deprecated ``step(epoch)``; the schedule is closed form anyway.
        return self.lr_at(self.last_epoch)

    def set_step(self, step: int) -> None:
        """Jump to scheduler step ``step`` and apply its LRs (no deprecation warning)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.last_epoch = int(step)
        values = self.lr_at(self.last_epoch)
        for group, value in zip(self.optimizer.param_groups, values, strict=True):
            # A tensor LR (capturable/fused optimizers) must be updated in place.
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)
            else:
                group["lr"] = value
        self._last_lr = [
            lr.clone() if isinstance(lr, torch.Tensor) else lr
            for lr in (group["lr"] for group in self.optimizer.param_groups)
        ]


def build_lr_scheduler(
    optimizer: Optimizer,
    *,
    warmup_steps: int | None,
    use_cosine_scheduler: bool = False,
    total_steps: int | None = None,
    warmup_start_lr: float = OPEN_SORA_WARMUP_START_LR,
    eta_min: float = 0.0,
) -> WarmupLR | None:
    """Open-Sora's choice of scheduler: none when ``warmup_steps`` is None and cosine is off.

    ``total_steps`` (Open-Sora: ``epochs * steps_per_epoch``) is required with cosine.
    """
    if not use_cosine_scheduler:
        if warmup_steps is None:
            logger.info("No LR scheduler: warmup_steps is None and the cosine schedule is off")
            return None
        return WarmupLR(optimizer, warmup_steps, warmup_start_lr)
    if total_steps is None:
        raise ValueError("use_cosine_scheduler needs total_steps (epochs * steps_per_epoch)")
    return WarmupLR(
        optimizer, warmup_steps or 0, warmup_start_lr, total_steps=total_steps, eta_min=eta_min
    )
