"""ColossalAI on a CPU: the gaps measured on this project's machines, handled in one place.

- HybridAdam / CPUAdam need a CUDA kernel ("No usable kernel found for CPUAdamLoader"):
  on a CPU the optimizer is torch's AdamW with the same hyper-parameters (logged).
- LowLevelZeroPlugin (zero1/zero2), Gemini and HybridParallelPlugin with ZeRO or tp/sp > 1
  need a CUDA device: asked for on a CPU they fail here with a message, not deep inside
  ColossalAI.
- The collective backend is gloo on a CPU, nccl on GPUs.
- Checkpoints never go through ``booster.load_optimizer`` (which calls the CPU accelerator's
  unsupported ``synchronize``): the project saves plain state dicts itself.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

GPU_ONLY_PLUGINS = {"zero2", "hybrid"}


def has_cuda() -> bool:
    """Whether this process can train on a CUDA GPU."""
    return torch.cuda.is_available()


def backend(requested: str = "auto") -> str:
    """The torch.distributed backend: nccl on GPUs, gloo on a CPU, unless one is named."""
    if requested != "auto":
        return requested
    return "nccl" if has_cuda() else "gloo"


def check_plugin(plugin: str) -> None:
    """Fail early, and clearly, for a plugin this machine cannot run."""
    if plugin in GPU_ONLY_PLUGINS and not has_cuda():
        raise RuntimeError(
            f"plugin '{plugin}' needs a CUDA GPU (ColossalAI's ZeRO and hybrid plugins do not run "
            "on a CPU); use plugin 'ddp' for CPU runs, as conf/local does"
        )


def make_optimizer(params, optim: dict) -> torch.optim.Optimizer:
    """HybridAdam on a GPU when asked for; torch AdamW otherwise (the CPU kernel is missing)."""
    kwargs = dict(lr=optim["lr"], eps=optim["eps"], weight_decay=optim["weight_decay"],
                  betas=tuple(optim["betas"]))  # fmt: skip
    if optim["cls"] == "HybridAdam" and has_cuda():
        from colossalai.nn.optimizer import HybridAdam

        return HybridAdam(params, adamw_mode=optim["adamw_mode"], **kwargs)
    if optim["cls"] == "HybridAdam":
        logger.info("HybridAdam needs a CUDA kernel; using torch AdamW with the same settings")
    if not optim["adamw_mode"]:
        return torch.optim.Adam(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)
