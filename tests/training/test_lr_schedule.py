"""Open-Sora's warm-up LR schedule, its cosine variant, and resumability."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from opensora_kedro.training.lr_schedule import WarmupLR, build_lr_scheduler
from opensora_kedro.training.state_io import load_state, save_state


def _optimizer(*lrs: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs or (1e-3,)]
    return torch.optim.AdamW(groups, eps=1e-15)


def _lrs(scheduler: WarmupLR, steps: int) -> list[list[float]]:
    """The LRs the optimizer uses for ``steps`` consecutive updates."""
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()  # no grads: a no-op that keeps torch's order check happy
        scheduler.step()
    return seen


def _open_sora_linear_warmup(peak: float, start: float, warmup: int, k: int) -> float:
    """Open-Sora's ``LinearWarmupLR.get_lr`` at ``last_epoch == k``."""
    if k < warmup:
        return start + (k + 1) / (warmup + 1) * (peak - start)
    return peak


def test_linear_warmup_matches_open_sora() -> None:
    scheduler = WarmupLR(_optimizer(5e-5), warmup_steps=4, warmup_start_lr=1e-6)
    expected = [[_open_sora_linear_warmup(5e-5, 1e-6, 4, k)] for k in range(8)]
    assert _lrs(scheduler, 8) == expected  # same formula, same floats
    assert expected[3][0] < 5e-5 and expected[4][0] == 5e-5


def test_zero_warmup_is_constant() -> None:
    scheduler = WarmupLR(_optimizer(1e-5), warmup_steps=0)
    assert _lrs(scheduler, 5) == [[1e-5]] * 5


def test_each_param_group_warms_to_its_own_lr() -> None:
    scheduler = WarmupLR(_optimizer(1e-3, 1e-4), warmup_steps=1, warmup_start_lr=0.0)
    first, second = _lrs(scheduler, 2)
    assert first == pytest.approx([5e-4, 5e-5]) and second == [1e-3, 1e-4]


def test_cosine_after_warmup() -> None:
    peak, eta_min = 1e-3, 1e-5
    scheduler = WarmupLR(
        _optimizer(peak), warmup_steps=2, warmup_start_lr=0.0, total_steps=10, eta_min=eta_min
    )
    lrs = [values[0] for values in _lrs(scheduler, 14)]
    assert lrs[2] == pytest.approx(peak)
    assert lrs[6] == pytest.approx(eta_min + (peak - eta_min) / 2)
    assert lrs[10] == pytest.approx(eta_min) and lrs[13] == pytest.approx(eta_min)
    cosine = lrs[2:11]
    assert all(a > b for a, b in zip(cosine, cosine[1:], strict=False))
    assert lrs[4] == pytest.approx(eta_min + (peak - eta_min) * (1 + math.cos(math.pi / 4)) / 2)


def test_state_dict_round_trip_continues_the_schedule(tmp_path: Path) -> None:
    scheduler = WarmupLR(_optimizer(1e-3), warmup_steps=5, total_steps=20, eta_min=1e-6)
    _lrs(scheduler, 3)
    save_state(scheduler.state_dict(), tmp_path, "lr_scheduler")

    resumed = WarmupLR(_optimizer(1e-3), warmup_steps=99)  # settings come from the state
    resumed.load_state_dict(load_state(tmp_path, "lr_scheduler"))
    resumed.optimizer.param_groups[0]["lr"] = scheduler.get_last_lr()[0]  # optimizer state's job
    assert _lrs(resumed, 10) == _lrs(scheduler, 10)


def test_set_step_fast_forwards_exactly_without_warnings() -> None:
    stepped = WarmupLR(_optimizer(1e-3), warmup_steps=3, total_steps=12)
    _lrs(stepped, 7)
    jumped = WarmupLR(_optimizer(1e-3), warmup_steps=3, total_steps=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jumped.set_step(7)
    assert jumped.last_epoch == stepped.last_epoch == 7
    assert jumped.optimizer.param_groups[0]["lr"] == stepped.optimizer.param_groups[0]["lr"]
    assert jumped.get_last_lr() == stepped.get_last_lr() == jumped.lr_at(7)


def test_tensor_lr_is_updated_in_place() -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=torch.tensor(1e-3))
    lr_tensor = optimizer.param_groups[0]["lr"]
    scheduler = WarmupLR(optimizer, warmup_steps=2, warmup_start_lr=0.0)
    scheduler.set_step(0)
    assert optimizer.param_groups[0]["lr"] is lr_tensor
    assert float(lr_tensor) == pytest.approx(1e-3 / 3)


def test_build_lr_scheduler_follows_open_sora() -> None:
    assert build_lr_scheduler(_optimizer(), warmup_steps=None) is None
    constant = build_lr_scheduler(_optimizer(), warmup_steps=0)
    assert isinstance(constant, WarmupLR) and constant.total_steps is None
    cosine = build_lr_scheduler(
        _optimizer(), warmup_steps=None, use_cosine_scheduler=True, total_steps=100
    )
    assert isinstance(cosine, WarmupLR) and (cosine.warmup_steps, cosine.total_steps) == (0, 100)
    with pytest.raises(ValueError, match="total_steps"):
        build_lr_scheduler(_optimizer(), warmup_steps=10, use_cosine_scheduler=True)


@pytest.mark.parametrize(
    "kwargs",
    [{"warmup_steps": -1}, {"warmup_steps": 10, "total_steps": 10}],
    ids=["negative", "short"],
)
def test_invalid_settings_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        WarmupLR(_optimizer(), **kwargs)
