"""The ColossalAI Booster for a job: plugin from the parameters, precision, grad clipping."""

from __future__ import annotations

from typing import Any

from opensora_kedro.runtime.compat import check_plugin, pass_through_policy
from opensora_kedro.runtime.params import PluginConfigParams, effective_sp_mode

PRECISIONS = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}


def make_plugin(
    name: str, config: PluginConfigParams, dtype: str, grad_clip: float | None, policy: Any = None
):
    """``ddp`` -> TorchDDPPlugin, ``zero2`` -> LowLevelZeroPlugin(stage 2), ``hybrid`` ->
    HybridParallelPlugin with the tp/pp/sp/zero settings of ``config``."""
    check_plugin(name, config)
    if name == "ddp":
        from colossalai.booster.plugin import TorchDDPPlugin

        return TorchDDPPlugin(static_graph=config.static_graph)
    common = dict(precision=PRECISIONS[dtype], initial_scale=2**16, max_norm=grad_clip or 0.0,
                  overlap_allgather=config.overlap_allgather)  # fmt: skip
    if name == "zero2":
        from colossalai.booster.plugin import LowLevelZeroPlugin

        return LowLevelZeroPlugin(
            stage=2, reduce_bucket_size_in_m=config.reduce_bucket_size_in_m, **common
        )
    if name == "hybrid":
        from colossalai.booster.plugin import HybridParallelPlugin

        return HybridParallelPlugin(
            tp_size=config.tp_size, pp_size=config.pp_size, sp_size=config.sp_size,
            sequence_parallelism_mode=effective_sp_mode(
                config.enable_sequence_parallelism, config.sequence_parallelism_mode
            ),
            enable_sequence_parallelism=config.enable_sequence_parallelism,
            zero_stage=config.zero_stage, static_graph=config.static_graph,
            zero_bucket_size_in_m=config.reduce_bucket_size_in_m,
            find_unused_parameters=True, enable_metadata_cache=False,
            custom_policy=policy or pass_through_policy(),
            **common,
        )  # fmt: skip
    raise ValueError(f"unknown plugin {name!r}; use ddp, zero2 or hybrid")


def clips_inside_plugin(name: str) -> bool:
    """ZeRO and hybrid plugins clip gradients in ``optimizer.step``; DDP needs it done by hand."""
    return name in ("zero2", "hybrid")
