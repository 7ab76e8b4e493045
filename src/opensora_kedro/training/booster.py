"""The ColossalAI Booster for a job: plugin from the parameters, precision, grad clipping."""

from __future__ import annotations

from typing import Any

from opensora_kedro.config.schemas.common import effective_sp_mode
from opensora_kedro.training.compat import check_plugin, pass_through_policy

PRECISIONS = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}


def make_plugin(
    name: str, config: dict[str, Any], dtype: str, grad_clip: float | None, policy: Any = None
):
    """``ddp`` -> TorchDDPPlugin, ``zero2`` -> LowLevelZeroPlugin(stage 2), ``hybrid`` ->
    HybridParallelPlugin with the tp/pp/sp/zero settings of ``config``."""
    check_plugin(name, config)
    if name == "ddp":
        from colossalai.booster.plugin import TorchDDPPlugin

        return TorchDDPPlugin(static_graph=config.get("static_graph", False))
    common = dict(precision=PRECISIONS[dtype], initial_scale=2**16, max_norm=grad_clip or 0.0,
                  overlap_allgather=config.get("overlap_allgather", False))  # fmt: skip
    if name == "zero2":
        from colossalai.booster.plugin import LowLevelZeroPlugin

        return LowLevelZeroPlugin(
            stage=2, reduce_bucket_size_in_m=config.get("reduce_bucket_size_in_m", 128), **common
        )
    if name == "hybrid":
        from colossalai.booster.plugin import HybridParallelPlugin

        return HybridParallelPlugin(
            tp_size=config["tp_size"], pp_size=config["pp_size"], sp_size=config["sp_size"],
            sequence_parallelism_mode=effective_sp_mode(
                config.get("enable_sequence_parallelism", False),
                config.get("sequence_parallelism_mode"),
            ),
            enable_sequence_parallelism=config.get("enable_sequence_parallelism", False),
            zero_stage=config.get("zero_stage", 2), static_graph=config.get("static_graph", False),
            zero_bucket_size_in_m=config.get("reduce_bucket_size_in_m", 128),
            find_unused_parameters=True, enable_metadata_cache=False,
            custom_policy=policy or pass_through_policy(),
            **common,
        )  # fmt: skip
    raise ValueError(f"unknown plugin {name!r}; use ddp, zero2 or hybrid")


def clips_inside_plugin(name: str) -> bool:
    """ZeRO and hybrid plugins clip gradients in ``optimizer.step``; DDP needs it done by hand."""
    return name in ("zero2", "hybrid")
