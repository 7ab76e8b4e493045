"""ColossalAI on a CPU: the gaps measured on this project's machines, handled in one place.

- HybridAdam / CPUAdam need a CUDA kernel ("No usable kernel found for CPUAdamLoader"):
  on a CPU the optimizer is torch's AdamW with the same hyper-parameters (logged).
- LowLevelZeroPlugin (zero1/zero2), Gemini and HybridParallelPlugin with ZeRO or tp/sp > 1
  need a CUDA device, as do tp and pp > 1: asked for on a CPU they fail here with a message,
  not deep inside ColossalAI. HybridParallelPlugin with tp = pp = 1 and zero_stage 0 (data
  and sequence parallelism) does run on a CPU, given a shardformer policy
  (``pass_through_policy`` for models without one).
- The collective backend is gloo on a CPU, nccl on GPUs (``launcher.backend: auto``);
  ``gloo`` keeps a job on the CPU even where GPUs exist, ``nccl`` insists on GPUs.
- Checkpoints never go through ``booster.load_optimizer`` (which calls the CPU accelerator's
  unsupported ``synchronize``): the project saves plain state dicts itself.
"""

from __future__ import annotations

import logging

import torch

from opensora_kedro.runtime.params import PluginConfigParams, plugin_needs_cuda
from opensora_kedro.training.params import OptimizerParams

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "nccl", "gloo")
_cpu_only = False  # set by use_backend("gloo")


def has_cuda() -> bool:
    """Whether this process trains on a CUDA GPU (never after ``use_backend("gloo")``)."""
    return not _cpu_only and torch.cuda.is_available()


def backend(requested: str = "auto") -> str:
    """The torch.distributed backend: nccl on GPUs, gloo on a CPU, unless one is named."""
    if requested != "auto":
        return requested
    return "nccl" if has_cuda() else "gloo"


def use_backend(requested: str) -> None:
    """Make this process (and ColossalAI's accelerator) use ``launcher.backend``.

    ``auto`` leaves ColossalAI's choice (CUDA when present); ``gloo`` runs on the CPU;
    ``nccl`` needs CUDA GPUs and fails here, clearly, on a machine without them.
    """
    global _cpu_only
    if requested not in BACKENDS:
        raise ValueError(f"launcher.backend must be one of {BACKENDS}, not {requested!r}")
    if requested == "auto":
        return
    from colossalai.accelerator import set_accelerator

    if requested == "nccl" and not torch.cuda.is_available():
        raise RuntimeError(
            "launcher.backend is nccl, which needs CUDA GPUs, and this machine has none; "
            "set launcher.backend to auto or gloo"
        )
    _cpu_only = requested == "gloo"
    set_accelerator("cuda" if requested == "nccl" else "cpu")
    logger.info("launcher.backend %s: running on %s", requested, "CUDA" if not _cpu_only else "CPU")


def check_precision(plugin: str, dtype: str) -> None:
    """fp16 needs a loss scaler, which ColossalAI's ZeRO and hybrid plugins bring and plain
    DDP here does not."""
    if plugin == "ddp" and dtype == "fp16":
        raise RuntimeError("dtype fp16 needs a loss scaler: use bf16 with plugin ddp, or zero2")


def check_plugin(plugin: str, config: PluginConfigParams | None = None) -> None:
    """Fail early, and clearly, for a plugin this machine cannot run.

    On a CPU the hybrid plugin runs data and sequence parallelism (tp = pp = 1, zero_stage
    0); ZeRO, tensor and pipeline parallelism need CUDA.
    """
    if has_cuda() or not plugin_needs_cuda(plugin, config):
        return
    raise RuntimeError(
        f"plugin '{plugin}' needs a CUDA GPU here (ColossalAI's ZeRO and model parallelism do "
        "not run on a CPU); use plugin 'ddp' for CPU runs, as conf/local does, or 'hybrid' "
        "with tp/pp sizes 1 and zero_stage 0"
    )


def make_optimizer(params, optim: OptimizerParams) -> torch.optim.Optimizer:
    """HybridAdam on a GPU when asked for; torch AdamW otherwise (the CPU kernel is missing)."""
    kwargs = dict(lr=optim.lr, eps=optim.eps, weight_decay=optim.weight_decay,
                  betas=tuple(optim.betas))  # fmt: skip
    if optim.cls == "HybridAdam" and has_cuda():
        from colossalai.nn.optimizer import HybridAdam

        return HybridAdam(params, adamw_mode=optim.adamw_mode, **kwargs)
    if optim.cls == "HybridAdam":
        logger.info("HybridAdam needs a CUDA kernel; using torch AdamW with the same settings")
    if not optim.adamw_mode:
        return torch.optim.Adam(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def pass_through_policy():
    """A shardformer policy that shards nothing: lets HybridParallelPlugin (ZeRO, data
    parallelism, tp = sp = 1) wrap a model that has no policy of its own instead of failing
    with "Auto policy ... is not implemented"."""
    from colossalai.shardformer.policies.base_policy import Policy

    class PassThroughPolicy(Policy):
        def config_sanity_check(self) -> None:
            pass

        def preprocess(self):
            return self.model

        def module_policy(self) -> dict:
            return {}

        def postprocess(self):
            return self.model

        def get_held_layers(self) -> list:
            return [self.model]

        def get_shared_params(self) -> list:
            return []

    return PassThroughPolicy()
