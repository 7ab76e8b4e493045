"""Parameters that may be ``auto``: resolved at run start from the detected hardware."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

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


def has_auto(params: dict[str, Any]) -> bool:
    """Whether any group sets an auto-capable key to ``auto``."""
    return any(
        isinstance(group, dict) and group.get(key) == AUTO
        for group in params.values()
        for key in RESOLVERS
    )


def resolve_auto(params: dict[str, Any], hardware: Hardware) -> dict[str, Any]:
    """A copy of ``params`` with every ``auto`` of an auto-capable key resolved (and logged)."""
    resolved = dict(params)
    for name, group in params.items():
        if not isinstance(group, dict):
            continue
        for key, resolver in RESOLVERS.items():
            if group.get(key) == AUTO:
                value = resolver(hardware)
                resolved[name] = {**resolved[name], key: value}
                logger.info("resolved %s.%s: auto -> %r (%s)", name, key, value, hardware.name)
    return resolved
