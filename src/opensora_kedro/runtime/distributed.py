"""The process group a job runs in: the launched workers', or a one-process group in-process."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port nothing listens on now (for a one-process rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the job (1 outside a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


@contextmanager
def process_group(backend: str = "auto") -> Iterator[None]:
    """Join the launched job's process group (torchrun's env vars), or make a one-process one.

    ColossalAI's Booster needs a process group even for one process; the group is torn
    down on exit when this call created it. ``backend`` is ``launcher.backend`` (see
    :func:`~opensora_kedro.runtime.compat.use_backend`).
    """
    import colossalai

    from opensora_kedro.runtime.compat import use_backend

    use_backend(backend)
    if dist.is_initialized():
        yield
        return
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        colossalai.launch_from_torch(verbose=False)
    else:
        colossalai.launch(rank=0, world_size=1, host="127.0.0.1", port=free_port(), verbose=False)
    try:
        yield
        # Every rank finishes its job before any tears the group down: a rank leaving early
        # can abort a peer still using a (ColossalAI sub-)group.
        if dist.get_world_size() > 1:
            dist.barrier()
    finally:
        dist.destroy_process_group()
