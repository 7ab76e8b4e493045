"""Parameters that may be ``auto``: resolved at run start from the detected hardware."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opensora_kedro.runtime.params import WorkerJobParams

logger = logging.getLogger(__name__)

AUTO = "auto"
# Open-Sora's batch sizes were searched on H200s (140 GB); other cards scale them by memory.
REFERENCE_GPU_MEMORY_GIB = 140.0


@dataclass(frozen=True)
class Hardware:
    """What this machine offers for training."""

    gpu_count: int
    gpu_memory_gib: float  # of the smallest GPU; 0 on CPU
    bf16: bool

    @property
    def name(self) -> str:
        if not self.gpu_count:
            return "cpu"
        return f"{self.gpu_count} GPU(s) with {self.gpu_memory_gib:.0f} GiB"


def detect_hardware() -> Hardware:
    """GPU count and memory (CUDA), or a CPU-only machine."""
    import torch  # late: config commands that need no hardware stay fast

    if not torch.cuda.is_available():
        return Hardware(gpu_count=0, gpu_memory_gib=0.0, bf16=False)
    count = torch.cuda.device_count()
    memory = min(torch.cuda.get_device_properties(i).total_memory for i in range(count)) / 2**30
    return Hardware(gpu_count=count, gpu_memory_gib=memory, bf16=torch.cuda.is_bf16_supported())


def _dtype(hardware: Hardware) -> str:
    if not hardware.gpu_count:
        return "fp32"  # CPU kernels for bf16 are slow and fp16 ones partial
    return "bf16" if hardware.bf16 else "fp16"


def _grad_checkpoint(hardware: Hardware) -> bool:
    # Checkpointing trades compute for memory: worth it on GPUs smaller than the
    # cards Open-Sora tuned for, never on a CPU where compute is the bottleneck.
    return bool(hardware.gpu_count) and hardware.gpu_memory_gib < REFERENCE_GPU_MEMORY_GIB


def _batch_size_scale(hardware: Hardware) -> float:
    if not hardware.gpu_count:
        return 1.0
    return round(min(hardware.gpu_memory_gib / REFERENCE_GPU_MEMORY_GIB, 1.0), 3)


RESOLVERS = {
    "dtype": _dtype,
    "grad_checkpoint": _grad_checkpoint,
    "batch_size_scale": _batch_size_scale,
}


# The key, added to a group after validation, that lists its keys given as ``auto`` where
# the group runs on launched workers (schemas with ``RESOLVED_ON_WORKERS``): each worker
# resolves them again from the hardware all workers share (see :func:`agree`).
AUTO_ON_WORKERS = "auto_on_workers"


def auto_keys(params: dict[str, Any]) -> dict[str, list[str]]:
    """``{group: [keys set to auto]}`` of the auto-capable keys."""
    found = {
        name: [key for key in RESOLVERS if group.get(key) == AUTO]
        for name, group in params.items()
        if isinstance(group, dict)
    }
    return {name: keys for name, keys in found.items() if keys}


def resolve_auto(params: dict[str, Any], hardware: Hardware) -> dict[str, Any]:
    """A copy of ``params`` with every ``auto`` of an auto-capable key resolved; one log line
    sums the choices up (same key, same value: named once with its groups)."""
    resolved = dict(params)
    choices: dict[tuple[str, Any], list[str]] = {}
    for name, keys in auto_keys(params).items():
        values = {key: RESOLVERS[key](hardware) for key in keys}
        resolved[name] = {**resolved[name], **values}
        for key, value in values.items():
            choices.setdefault((key, value), []).append(name)
    if choices:
        logger.info("auto on %s: %s", hardware.name, "; ".join(
            f"{key}={value!r} ({len(groups)} group{'s' if len(groups) > 1 else ''})"
            for (key, value), groups in choices.items()
        ))  # fmt: skip
    return resolved


def agree(found: list[Hardware]) -> Hardware:
    """What every one of several machines offers: the fewest GPUs, the smallest memory, bf16
    only where all have it (values resolved from it suit every worker)."""
    return Hardware(
        gpu_count=min(h.gpu_count for h in found),
        gpu_memory_gib=min(h.gpu_memory_gib for h in found),
        bf16=all(h.bf16 for h in found),
    )


P = TypeVar("P", bound="WorkerJobParams")


def resolve_on_workers(params: P, hardware: Hardware) -> P:
    """``params`` with its ``auto_on_workers`` keys resolved for ``hardware`` (the workers'),
    logging each value that differs from the launching machine's."""
    values = {key: RESOLVERS[key](hardware) for key in params.auto_on_workers}
    for key, value in values.items():
        if value != getattr(params, key):
            logger.info("auto %s on the workers (%s): %r, not the launching machine's %r",
                        key, hardware.name, value, getattr(params, key))  # fmt: skip
    return params.model_copy(update=values)
