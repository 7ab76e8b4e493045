"""Capture and restore the process's global random number generators.

Covers Python's ``random``, numpy's legacy global generator, torch's CPU generator and, when
CUDA is available, the generator of the *current* CUDA device. The captured state holds
only tensors and JSON-safe values, so :mod:`opensora_kedro.training.state_io` stores it
without pickling; restoring it makes the following draws identical to those after capture.

Only the current CUDA device is captured because ``torch.cuda.get_rng_state_all()`` creates a
context on every visible GPU, which costs memory on each of them in a one-GPU-per-rank job.
Each rank owns its generators, so a multi-rank job stores one RNG state per rank.
Explicit ``torch.Generator`` or ``numpy.random.Generator`` objects (like the sampler's) are
not global and are not captured here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def capture() -> dict[str, Any]:
    """The current state of every global generator, as tensors and JSON-safe values."""
    version, internal, gauss_next = random.getstate()
    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            # 625 words below 2**32: a tensor keeps them compact and exact.
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "algorithm": algorithm,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        state["cuda"] = {"device": device, "state": torch.cuda.get_rng_state(device)}
    return state


def restore(state: dict[str, Any]) -> None:
    """Put every global generator back into the state :func:`capture` returned.

    A captured CUDA state is applied to the current CUDA device; without CUDA it is skipped
    with a warning (CPU draws still match).
    """
    python = state["python"]
    internal = tuple(int(word) for word in python["internal"].tolist())
    random.setstate((python["version"], internal, python["gauss_next"]))

    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["algorithm"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )

    torch.set_rng_state(state["torch"].to(device="cpu", dtype=torch.uint8))
    _restore_cuda(state.get("cuda"))


def _restore_cuda(cuda: dict[str, Any] | None) -> None:
    if cuda is None:
        return
    if not torch.cuda.is_available():
        logger.warning("Checkpoint holds a CUDA RNG state but CUDA is unavailable; skipped")
        return
    device = torch.cuda.current_device()
    if cuda["device"] != device:
        # Ranks map to devices by launch order, so a different index is expected after a
        # relaunch with another device mapping; the stream of draws is what matters.
        logger.info("Restoring device %s's CUDA RNG state on device %s", cuda["device"], device)
    torch.cuda.set_rng_state(cuda["state"].to(device="cpu", dtype=torch.uint8), device)


@contextmanager
def preserved() -> Iterator[None]:
    """Run the block without moving any random stream this module captures (e.g. samples
    drawn in the middle of training: a run with them trains exactly like one without)."""
    state = capture()
    try:
        yield
    finally:
        restore(state)
