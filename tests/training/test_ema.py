"""EMA of model weights as Open-Sora computes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from opensora_kedro.training.ema import (
    create_ema_model,
    ema_state_dict,
    load_ema_state_dict,
    update_ema,
)
from opensora_kedro.training.state_io import load_state, save_state


class _Net(nn.Module):
    """Trainable weights, a frozen one, ``pos_embed``, and float + integer buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, 4))
        self.proj = nn.Linear(4, 4)
        self.frozen = nn.Parameter(torch.randn(4), requires_grad=False)
        self.norm = nn.BatchNorm1d(4)  # running_mean (float) and num_batches_tracked (int)


class _Wrapper(nn.Module):
    """Stands in for DDP: everything under a ``module.`` prefix."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def _perturb(model: nn.Module) -> None:
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(1) if tensor.is_floating_point() else tensor.add_(3)


def _open_sora_ema(ema: torch.Tensor, weight: torch.Tensor, decay: float) -> torch.Tensor:
    return ema.clone().mul_(decay).add_(weight, alpha=1 - decay)


def test_create_ema_model_is_float32_frozen_copy() -> None:
    model = _Net().to(torch.bfloat16)
    ema = create_ema_model(model)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in ema.parameters())
    assert ema.norm.num_batches_tracked.dtype == torch.int64
    assert not ema.training and model.proj.weight.dtype == torch.bfloat16


def test_update_follows_open_sora_and_handles_buffers() -> None:
    torch.manual_seed(0)
    model = _Net()
    ema = create_ema_model(model)
    before = {name: tensor.clone() for name, tensor in ema.state_dict().items()}
    _perturb(model)
    update_ema(ema, model, decay=0.9)
    state, current = ema.state_dict(), model.state_dict()
    for name in ("proj.weight", "proj.bias", "norm.weight", "norm.running_mean"):
        assert torch.equal(state[name], _open_sora_ema(before[name], current[name], 0.9)), name
    assert torch.equal(state["pos_embed"], before["pos_embed"])  # skipped, as Open-Sora
    assert torch.equal(state["frozen"], before["frozen"])  # not trainable
    assert state["norm.num_batches_tracked"] == current["norm.num_batches_tracked"]  # copied


def test_bf16_model_uses_master_weights_or_upcasts() -> None:
    torch.manual_seed(0)
    master = _Net()
    model = _Net().to(torch.bfloat16)
    model.load_state_dict(master.state_dict())
    ema = create_ema_model(master)
    _perturb(master)
    masters = {name: p for name, p in master.named_parameters()}
    expected = _open_sora_ema(ema.proj.weight, master.proj.weight, 0.99)
    update_ema(ema, model, 0.99, master_weights=masters)
    assert ema.proj.weight.dtype == torch.float32
    assert torch.equal(ema.proj.weight, expected)

    upcast = create_ema_model(model)
    update_ema(upcast, model, 0.5)
    assert upcast.proj.weight.dtype == torch.float32


def test_wrapper_prefixes_are_ignored() -> None:
    model = _Net()
    ema = create_ema_model(model)
    _perturb(model)
    update_ema(ema, _Wrapper(model), decay=0.0)  # decay 0 copies
    assert torch.equal(ema.proj.weight, model.proj.weight)
    assert set(ema_state_dict(_Wrapper(ema))) == set(model.state_dict())


def test_sharded_update_equals_full_update() -> None:
    """Ranks updating their own flat shards (ZeRO-style) by name give the full result."""
    torch.manual_seed(0)
    model = _Net()
    full = create_ema_model(model)
    sharded = {name: p.detach().float().clone() for name, p in full.named_parameters()}
    _perturb(model)
    update_ema(full, model, decay=0.95)
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    for rank in range(2):
        ema_shards = {n: t.view(-1).chunk(2)[rank] for n, t in sharded.items() if n in trainable}
        model_shards = {n: t.reshape(-1).chunk(2)[rank] for n, t in trainable.items()}
        update_ema(ema_shards, model_shards, decay=0.95, skip=("pos_embed",))
    for name, param in full.named_parameters():
        assert torch.equal(param, sharded[name]), name


def test_state_dict_round_trip_keeps_float32(tmp_path: Path) -> None:
    model = _Net()
    ema = create_ema_model(model)
    _perturb(model)
    update_ema(ema, model, 0.9)
    save_state(ema_state_dict(ema), tmp_path, "ema")
    loaded = load_state(tmp_path, "ema")
    restored = create_ema_model(_Net().to(torch.bfloat16))
    load_ema_state_dict(
        restored, {k: v.to(torch.bfloat16) if k == "pos_embed" else v for k, v in loaded.items()}
    )
    assert restored.pos_embed.dtype == torch.float32
    for name, tensor in ema.state_dict().items():
        if name != "pos_embed":
            assert torch.equal(restored.state_dict()[name], tensor), name


def test_mismatches_are_reported() -> None:
    model, ema = _Net(), create_ema_model(_Net())
    with pytest.raises(ValueError, match="decay"):
        update_ema(ema, model, decay=1.5)
    with pytest.raises(KeyError, match="extra"):
        update_ema({}, {"extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="proj.weight"):
        update_ema({"proj.weight": torch.zeros(2)}, {"proj.weight": torch.zeros(3)})
    with pytest.raises(KeyError, match="missing"):
        load_ema_state_dict(ema, {"proj.weight": model.proj.weight})
    load_ema_state_dict(ema, {"proj.weight": model.proj.weight}, strict=False)
    assert torch.equal(ema.proj.weight, model.proj.weight)
