"""How GPU-heavy nodes are launched."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from opensora_kedro.config.schemas.common import Issue, NonNegativeInt, Params, PositiveInt

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
