"""Capturing and restoring the global RNGs makes later draws identical."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora_kedro.training import rng
from opensora_kedro.training.state_io import load_state, save_state


def _draws() -> tuple:
    """Draws from every global generator, including the cached-Gaussian paths."""
    return (
        random.random(),
        random.gauss(0, 1),  # leaves gauss_next set
        random.getrandbits(64),
        np.random.rand(3).tolist(),
        np.random.standard_normal(),
        np.random.randint(0, 2**31, size=4).tolist(),
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
        torch.randint(0, 1000, (3,)).tolist(),
    )


def _scramble() -> None:
    random.seed(12345)
    np.random.seed(54321)
    torch.manual_seed(999)


def test_restore_replays_the_same_draws() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draws()  # move away from the seeded state, leaving cached Gaussians behind
    state = rng.capture()
    expected = _draws()
    _scramble()
    rng.restore(state)
    assert _draws() == expected


def test_state_survives_state_io(tmp_path: Path) -> None:
    state = rng.capture()
    expected = _draws()
    written = save_state(state, tmp_path, "rng")
    assert {path.suffix for path in written} == {".json", ".safetensors"}
    _scramble()
    rng.restore(load_state(tmp_path, "rng"))
    assert _draws() == expected


def test_capture_is_a_snapshot() -> None:
    state = rng.capture()
    torch_state, numpy_keys = state["torch"].clone(), state["numpy"]["keys"].clone()
    _draws()
    assert torch.equal(state["torch"], torch_state)
    assert torch.equal(state["numpy"]["keys"], numpy_keys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_cuda_state_without_cuda_is_skipped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    state = rng.capture()
    assert state["cuda"] is None
    state["cuda"] = {"device": 0, "state": torch.zeros(16, dtype=torch.uint8)}
    expected = (torch.rand(2).tolist(), random.random())
    with caplog.at_level(logging.WARNING):
        rng.restore(state)
    assert "CUDA" in caplog.text
    assert (torch.rand(2).tolist(), random.random()) == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_replay() -> None:
    torch.cuda.manual_seed(5)
    state = rng.capture()
    expected = torch.rand(4, device="cuda").tolist()
    torch.cuda.manual_seed(6)
    rng.restore(state)
    assert torch.rand(4, device="cuda").tolist() == expected
