"""How GPU-heavy nodes are launched."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from opensora_kedro.config.schemas.common import NonNegativeInt, Params, PositiveInt


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
    master_addr: str = Field("127.0.0.1", description="rendezvous address")
    master_port: PositiveInt = Field(29500, description="rendezvous port")
    rdzv_timeout_s: PositiveInt = Field(600, description="give up on a stuck rendezvous after this")
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="torch.distributed backend (auto: nccl on GPU, gloo on CPU)"
    )

    @property
    def world_size(self) -> int:
        """Number of worker processes across all nodes."""
        return self.nproc_per_node * self.nnodes
