"""The fp32 master weights of ColossalAI's mixed-precision optimizers, by parameter name.

Under bf16/fp16 the plugins train low-precision working weights and keep fp32 masters that
the optimizer updates; the EMA follows the masters and checkpoints hold them (as Open-Sora's
``update_ema`` reads ``optimizer.get_working_to_master_map()``), since a bf16 copy loses the
small updates. Two layouts (colossalai 0.5):

- mixed precision without ZeRO (HybridParallelAMPOptimizer): one whole fp32 tensor per
  parameter;
- ZeRO (LowLevelZeroOptimizer, HybridParallelZeroOptimizer): each rank of the parameter's
  group holds a flat slice: the parameter flattened, zero-padded to a multiple of the group
  size and split evenly; rank ``r`` holds elements ``[r * chunk, (r + 1) * chunk)``
  (``_create_master_param_current_rank``). Gathering a whole tensor is collective.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Master = torch.Tensor


@dataclass(frozen=True)
class MasterShard:
    """This rank's slice of a parameter's fp32 master: ``tensor`` (padding cut off) holds the
    flattened parameter's elements from ``start``; every rank's slice is ``chunk`` long."""

    tensor: torch.Tensor
    start: int
    chunk: int
    group: Any  # the process group (or tuple of groups) the parameter is split over

    def target(self, full: torch.Tensor) -> torch.Tensor:
        """The view of ``full`` (the whole parameter's shape) that this slice covers."""
        return full.view(-1)[self.start : self.start + self.tensor.numel()]


def master_weights(optimizer: Any, module: nn.Module) -> dict[str, Master | MasterShard]:
    """``{parameter name: its fp32 master}`` where ``optimizer`` keeps masters apart from the
    working weights; empty when it trains the weights themselves (fp32, plain DDP)."""
    getter = getattr(optimizer, "get_working_to_master_map", None)
    masters = getter() if callable(getter) else None
    if not masters:
        return {}
    found: dict[str, Master | MasterShard] = {}
    for name, param in module.named_parameters():
        master = masters.get(id(param))
        if master is None or master is param:
            continue
        if master.shape == param.shape:
            found[name] = master
            continue
        from colossalai.zero.low_level._utils import get_nd_rank

        group = optimizer.param_to_pg[param]
        found[name] = zero_shard(master, param.numel(), int(get_nd_rank(group)), group)
    return found


def zero_shard(master: torch.Tensor, numel: int, rank: int, group: Any) -> MasterShard:
    """Rank ``rank``'s ZeRO slice ``master`` (padded to the chunk size) of a parameter of
    ``numel`` elements, as a :class:`MasterShard` without the padding."""
    chunk = master.numel()
    start = rank * chunk
    valid = max(0, min(chunk, numel - start))
    return MasterShard(master.view(-1)[:valid], start, chunk, group)


def gather_into(full: torch.Tensor, shard: MasterShard) -> None:
    """Fill ``full`` (a whole parameter's shape) with every rank's slice of it, each rank
    contributing what ``shard.target(full)`` holds on it. Collective over ``shard.group``."""
    from colossalai.zero.low_level._utils import (
        all_gather_into_flat_tensor_nd,
        get_nd_world_size,
    )

    local = full.new_zeros(shard.chunk)
    local[: shard.tensor.numel()] = shard.target(full)
    gathered = full.new_empty(shard.chunk * get_nd_world_size(shard.group))
    all_gather_into_flat_tensor_nd(gathered, local, shard.group)
    full.view(-1).copy_(gathered[: full.numel()])


def model_state(
    module: nn.Module, masters: Mapping[str, Master | MasterShard]
) -> dict[str, torch.Tensor]:
    """``module``'s state dict on the CPU with every parameter that has a master taken from it
    in fp32 (gathered from the ranks' slices: collective under ZeRO)."""
    state = {name: tensor.detach() for name, tensor in module.state_dict().items()}
    for name, master in masters.items():
        if isinstance(master, MasterShard):
            full = torch.empty(state[name].shape, dtype=master.tensor.dtype,
                               device=master.tensor.device)  # fmt: skip
            master.target(full).copy_(master.tensor)
            gather_into(full, master)
            state[name] = full
        else:
            state[name] = master.detach()
    return {name: tensor.cpu() for name, tensor in state.items()}


@torch.no_grad()
def load_masters(masters: Mapping[str, Master | MasterShard], state: Mapping[str, Any]) -> None:
    """Copy the fp32 weights of ``state`` (whole tensors, as :func:`model_state` saves them)
    into the masters: each rank takes its own slice. The working weights are loaded apart."""
    for name, master in masters.items():
        source = state[name].to(dtype=torch.float32)
        if isinstance(master, MasterShard):
            master.tensor.copy_(master.target(source.to(master.tensor.device)))
        else:
            master.copy_(source)
