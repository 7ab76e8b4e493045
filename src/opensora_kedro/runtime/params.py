"""Where a job runs: the launcher's parameters, the Booster plugin's, and what a job's
workers resolve again."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from opensora_kedro.params import (
    Issue,
    NonNegativeInt,
    Params,
    PositiveInt,
)

# The keys a group may give as ``auto`` (config.hardware resolves them).
AutoKey = Literal["dtype", "grad_checkpoint", "batch_size_scale"]


class WorkerJobParams(Params):
    """A group whose job runs on launched workers, which resolve its ``auto`` keys again
    for the hardware all of them share (config.hardware)."""

    RESOLVED_ON_WORKERS: ClassVar[bool] = True

    auto_on_workers: list[AutoKey] = Field(
        default_factory=list,
        description="keys given as auto, resolved again on the workers (set by the loader)",
    )


PluginName = Literal["ddp", "zero2", "hybrid"]


class PluginConfigParams(Params):
    """Settings of the ColossalAI Booster plugin."""

    reduce_bucket_size_in_m: PositiveInt = Field(128, description="ZeRO reduce bucket, millions")
    overlap_allgather: bool = Field(False, description="overlap ZeRO all-gather with compute")
    tp_size: PositiveInt = Field(1, description="tensor-parallel group size (hybrid)")
    pp_size: PositiveInt = Field(1, description="pipeline-parallel group size (hybrid)")
    sp_size: PositiveInt = Field(1, description="sequence-parallel group size (hybrid)")
    sequence_parallelism_mode: Literal["ring_attn", "all_to_all", "split_gather", "ring"] | None = (
        Field(None, description="how the sequence is split across sp ranks")
    )
    enable_sequence_parallelism: bool = Field(False, description="turn sequence parallelism on")
    static_graph: bool = Field(False, description="DDP static graph optimisation")
    zero_stage: Literal[0, 1, 2] = Field(2, description="ZeRO stage inside the hybrid plugin")


# ColossalAI 0.5 (hybrid_parallel_plugin.py): with sequence parallelism on and no mode, the
# plugin builds its groups for all_to_all; modes that split heads need heads % sp == 0.
DEFAULT_SP_MODE = "all_to_all"


HEAD_SPLITTING_SP_MODES = ("all_to_all", "ring_attn")


TP_SHARED_SP_MODES = ("split_gather", "ring")  # sp rides on the tp group, sp_size is ignored


def effective_sp_mode(enable: bool, mode: str | None) -> str | None:
    """The sequence-parallelism mode ColossalAI's HybridParallelPlugin actually runs.

    ``None`` when sequence parallelism is off (the plugin then ignores any mode), the given
    mode, or the plugin's default ``all_to_all`` when none is given. The project passes this
    value to the plugin (its ShardConfig would otherwise default to split_gather).
    """
    if not enable:
        return None
    return mode or DEFAULT_SP_MODE


def _sp_mode_issues(config: PluginConfigParams, num_heads: int | None) -> list[Issue]:
    mode = effective_sp_mode(config.enable_sequence_parallelism, config.sequence_parallelism_mode)
    issues: list[Issue] = []
    if config.sequence_parallelism_mode and mode is None:
        issues.append(
            (("plugin_config", "sequence_parallelism_mode"), config.sequence_parallelism_mode,
             "ignored while enable_sequence_parallelism is false")
        )  # fmt: skip
    if mode in TP_SHARED_SP_MODES:
        if config.tp_size == 1:
            issues.append(
                (
                    ("plugin_config", "sequence_parallelism_mode"),
                    mode,
                    f"{mode} runs on the tensor-parallel group: needs tp_size > 1",
                )
            )
        if config.sp_size > 1:
            issues.append((("plugin_config", "sp_size"), config.sp_size,
                           f"ignored by {mode} (sp follows tp_size): set sp_size 1"))  # fmt: skip
    if num_heads is not None and mode in HEAD_SPLITTING_SP_MODES and num_heads % config.sp_size:
        shown = mode if config.sequence_parallelism_mode else f"{mode} (ColossalAI's default)"
        issues.append(
            (("plugin_config", "sp_size"), config.sp_size,
             f"{shown} splits heads: must divide num_heads ({num_heads})")
        )  # fmt: skip
    return issues


def weight_sharding_issues(config: PluginConfigParams | None) -> list[Issue]:
    """Training refuses tp and pp > 1: no shardformer policy of the project splits weights or
    layers (the MMDiT's splits sequences), so ColossalAI would run copies or fail mid-boost."""
    if config is None:
        return []
    return [
        (("plugin_config", name), getattr(config, name),
         f"{what} is not built for training (the MMDiT policy splits sequences: use sp_size); "
         "set 1")
        for name, what in (("tp_size", "tensor parallelism"), ("pp_size", "pipeline parallelism"))
        if getattr(config, name) > 1
    ]  # fmt: skip


def plugin_needs_cuda(plugin: str | None, config: PluginConfigParams | None) -> bool:
    """Whether ColossalAI needs CUDA for ``plugin``: ZeRO (zero2, hybrid with zero_stage > 0)
    and tensor or pipeline parallelism do not run on a CPU; the hybrid plugin's data and
    sequence parallelism (tp = pp = 1, zero_stage 0) do, over gloo."""
    if plugin not in ("zero2", "hybrid"):
        return False
    config = config or PluginConfigParams()
    return plugin == "zero2" or (config.tp_size, config.pp_size) != (1, 1) or config.zero_stage != 0


def plugin_issues(
    plugin: str | None, config: PluginConfigParams | None, num_heads: int | None, world_size: int
) -> list[tuple[tuple, Any, str]]:
    """Parallel sizes that do not fit the plugin, the model (its heads, if any) or the devices."""
    if config is None:
        return []
    issues = _sp_mode_issues(config, num_heads)
    group = config.tp_size * config.sp_size * config.pp_size
    # reported at the largest of the three sizes: the one most likely to change
    largest = max(("sp_size", "tp_size", "pp_size"), key=lambda name: getattr(config, name))
    at = (("plugin_config", largest), getattr(config, largest))
    if plugin != "hybrid" and group > 1:
        issues.append((("plugin",), plugin, f"tp*sp*pp = {group} needs plugin 'hybrid'"))
    if group > world_size:
        issues.append(
            (*at, f"tp*sp*pp = {group} exceeds the {world_size} device(s) of the launcher")
        )
    elif world_size % group:
        issues.append((*at, f"tp*sp*pp = {group} must divide the world size {world_size}"))
    if config.sp_size > 1 and not config.enable_sequence_parallelism:
        issues.append(
            (("plugin_config", "enable_sequence_parallelism"), False, "sp_size > 1 needs it true")
        )
    if num_heads is not None and num_heads % config.tp_size:
        issues.append(
            (("plugin_config", "tp_size"), config.tp_size, f"must divide num_heads ({num_heads})")
        )
    return issues


LOOPBACK = ("127.0.0.1", "localhost", "::1")


class LauncherParams(Params):
    """The launcher every training and batch-inference node goes through."""

    type: Literal["inprocess", "colossalai"] = Field(
        "inprocess", description="run in the Kedro process, or start workers via ColossalAI"
    )
    nproc_per_node: PositiveInt = Field(1, description="worker processes (GPUs) per node")
    nnodes: PositiveInt = Field(1, description="number of nodes")
    node_rank: NonNegativeInt = Field(
        0, description="this node's rank (rendezvous without hostfile)"
    )
    hostfile: str | None = Field(None, description="file listing the hosts (colossalai run)")
    master_addr: str = Field("127.0.0.1", min_length=1, description="rendezvous address")
    master_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        29500, description="rendezvous TCP port, 1-65535"
    )
    rdzv_timeout_s: PositiveInt = Field(600, description="give up on a stuck rendezvous after this")
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto",
        description="collective backend of the workers (auto: nccl on GPUs, gloo on a CPU; "
        "nccl needs CUDA GPUs, gloo runs the job on the CPU)",
    )

    def cross_checks(self, context: dict[str, Any]) -> list[Issue]:
        issues: list[Issue] = []
        if self.node_rank >= self.nnodes:
            issues.append(
                (
                    ("node_rank",),
                    self.node_rank,
                    f"must be below nnodes ({self.nnodes}): ranks are 0..nnodes-1",
                )
            )
        if self.type == "inprocess" and self.world_size > 1:
            issues.append((("type",), self.type,
                           f"inprocess runs one process, not nproc_per_node x nnodes = "
                           f"{self.world_size}: use type colossalai or set both to 1"))  # fmt: skip
        if self.nnodes > 1 and not self.hostfile and self.master_addr in LOOPBACK:
            issues.append((("master_addr",), self.master_addr,
                           "nnodes > 1 without a hostfile: every node must reach the master "
                           "at this address; give the master node's address"))  # fmt: skip
        return issues

    def input_paths(self) -> list[tuple[tuple, str]]:
        if self.type == "colossalai" and self.hostfile:
            return [(("hostfile",), self.hostfile)]
        return []

    @property
    def world_size(self) -> int:
        """Number of worker processes across all nodes."""
        return self.nproc_per_node * self.nnodes
