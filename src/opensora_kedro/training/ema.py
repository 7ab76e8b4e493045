"""Exponential moving average of model weights, as Open-Sora's ``update_ema`` (brief §7.2).

``ema = decay * ema + (1 - decay) * weight`` for every trainable parameter except
``pos_embed``, in float32, with the weight taken from the fp32 master copy when the model
runs in bf16 (pass ``master_weights``; otherwise the bf16 weight is upcast). Under ZeRO a
rank holds a slice of each master: it updates that slice of its (whole) EMA copy, and
:func:`sync_ema_shards` makes the copies whole before they are saved.

The update is element-wise and matches tensors *by name*, so it works on whatever each side
holds locally: whole tensors, a rank's shard (``DTensor`` locals or plain shard dicts), or a
model wrapped by DDP / ``torch.compile`` / FSDP (their wrapper name parts are ignored).
Open-Sora leaves buffers alone; here floating buffers are averaged like weights and
non-floating ones (counters such as ``num_batches_tracked``) are copied, because averaging an
integer counter is meaningless and a stale copy would be wrong.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn

from opensora_kedro.training.master_weights import MasterShard, gather_into

logger = logging.getLogger(__name__)

DEFAULT_SKIP = ("pos_embed",)
# Name parts that wrappers insert; a name minus these is the bare model's name.
_WRAPPER_PARTS = ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")

TensorSource = nn.Module | Mapping[str, torch.Tensor]


def create_ema_model(model: nn.Module) -> nn.Module:
    """A float32, gradient-free, eval-mode deep copy of ``model`` to hold the EMA."""
    ema_model = copy.deepcopy(model).float()
    ema_model.requires_grad_(False)
    return ema_model.eval()


@torch.no_grad()
def update_ema(
    ema_model: TensorSource,
    model: TensorSource,
    decay: float = 0.9999,
    *,
    skip: Iterable[str] = DEFAULT_SKIP,
    master_weights: Mapping[str, torch.Tensor | MasterShard] | None = None,
) -> None:
    """Move ``ema_model`` towards ``model`` by one EMA step, in place.

    Either side may be a module or a ``{name: tensor}`` mapping (e.g. this rank's shards);
    names are compared without wrapper prefixes. From a module, parameters that do not
    require grad are left alone (as Open-Sora does); a mapping is used entry by entry.
    ``master_weights`` maps names to fp32 master copies that replace low-precision weights
    (whole, or this rank's :class:`MasterShard`, which updates only its slice).
    Every source name must exist in the EMA with the same local shape.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    targets = dict(_named_tensors(ema_model, trainable_only=False))
    masters = {_canonical(name): tensor for name, tensor in (master_weights or {}).items()}
    skipped = set(skip)
    for name, source in _named_tensors(model, trainable_only=True):
        if name in skipped:
            continue
        if name not in targets:
            raise KeyError(f"EMA model has no tensor {name!r}")
        _step(targets[name], masters.get(name, source), decay, name)


@torch.no_grad()
def sync_ema_shards(
    ema_model: nn.Module, master_weights: Mapping[str, torch.Tensor | MasterShard]
) -> None:
    """Gather the slices the ranks updated from their ZeRO master shards, so that every rank's
    EMA is whole again (collective: all ranks call it, e.g. before a checkpoint)."""
    own = {_canonical(name): tensor for name, tensor in ema_model.named_parameters()}
    for name, master in master_weights.items():
        if isinstance(master, MasterShard):
            gather_into(own[_canonical(name)].data, master)


def ema_state_dict(ema_model: nn.Module) -> dict[str, torch.Tensor]:
    """The EMA weights under the bare model's names (no wrapper prefixes), detached."""
    return {_canonical(name): tensor.detach() for name, tensor in ema_model.state_dict().items()}


@torch.no_grad()
def load_ema_state_dict(
    ema_model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True
) -> None:
    """Copy ``state`` into ``ema_model`` in place, keeping its float32 dtype and device.

    With ``strict`` every name must match both ways; shapes must always match.
    """
    own = {
        _canonical(name): tensor for name, tensor in ema_model.state_dict(keep_vars=True).items()
    }
    incoming = {_canonical(name): tensor for name, tensor in state.items()}
    missing, unexpected = own.keys() - incoming.keys(), incoming.keys() - own.keys()
    if strict and (missing or unexpected):
        raise KeyError(f"EMA state: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    for name in own.keys() & incoming.keys():
        target, source = _local(own[name]), _local(incoming[name])
        _check_shapes(name, target, source)
        # copy_ (not assignment) keeps the EMA's float32 dtype and device.
        target.copy_(source)


def _step(
    target: torch.Tensor, source: torch.Tensor | MasterShard, decay: float, name: str
) -> None:
    if isinstance(source, MasterShard):
        target, source = source.target(_local(target)), source.tensor
    target, source = _local(target), _local(source)
    _check_shapes(name, target, source)
    source = source.to(device=target.device)
    if target.is_floating_point() and source.is_floating_point():
        # Same op order as Open-Sora (mul_ then add_), so results match bit for bit.
        target.mul_(decay).add_(source.to(target.dtype), alpha=1 - decay)
    else:
        target.copy_(source)


def _check_shapes(name: str, target: torch.Tensor, source: torch.Tensor) -> None:
    # copy_ and add_ would broadcast silently; a shape mismatch means mismatched shards.
    if target.shape != source.shape:
        raise ValueError(f"EMA tensor {name!r}: {tuple(source.shape)} vs {tuple(target.shape)}")


def _named_tensors(
    source: TensorSource, trainable_only: bool
) -> Iterator[tuple[str, torch.Tensor]]:
    if not isinstance(source, nn.Module):
        for name, tensor in source.items():
            yield _canonical(name), tensor
        return
    for name, parameter in source.named_parameters():
        if parameter.requires_grad or not trainable_only:
            yield _canonical(name), parameter
    for name, buffer in source.named_buffers():
        yield _canonical(name), buffer


def _canonical(name: str) -> str:
    parts = name.split(".")
    if parts and parts[0] == "module":  # DistributedDataParallel
        parts = parts[1:]
    return ".".join(part for part in parts if part not in _WRAPPER_PARTS)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    # A DTensor's local shard is a view, so updating it in place updates the DTensor.
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor
