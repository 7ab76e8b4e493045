"""Atomic, verified checkpoints: layout, exact resume, crashes, pruning and corruption."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from opensora_kedro.training import checkpoint, rng
from opensora_kedro.training.checkpoint import CheckpointError, CheckpointManager
from opensora_kedro.training.ema import create_ema_model, load_ema_state_dict, update_ema
from opensora_kedro.training.lr_schedule import WarmupLR

from .test_state_io import assert_state_equal

# Shared by the tests and the crashing subprocess, so both know what a step's content is.
_PARTS_SOURCE = """
import torch

def parts(step, size=1 << 21):
    return {
        "model": {"w": torch.full((size,), float(step)), "b": torch.arange(4.0) + step},
        "optimizer": {"state": {0: {"step": torch.tensor(float(step))}}, "param_groups": []},
        "sampler": {"seed": 42, "epoch": 0, "last_micro_batch_access_index": 8 * step},
        "running": {"step": step},
    }
"""
_namespace: dict[str, Any] = {}
exec(_PARTS_SOURCE, _namespace)
parts: Callable[..., dict[str, Any]] = _namespace["parts"]

_CRASHING_SAVER = (
    _PARTS_SOURCE
    + """
import sys, time
from pathlib import Path
from opensora_kedro.training import checkpoint

root, mode, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
write_part = checkpoint.save_state

def pausing_write_part(state, directory, name):
    written = write_part(state, directory, name)
    if mode == "pause" and name == "model" and float(state["b"][0]) == 3:
        marker.touch()  # the parent kills us here: model written, the rest not
        time.sleep(60)
    return written

checkpoint.save_state = pausing_write_part
manager = checkpoint.CheckpointManager(root, keep_n_latest=2)
step = 0
while True:
    step += 1
    manager.save(step, parts(step))
"""
)


def _small_parts(step: int) -> dict[str, Any]:
    return parts(step, size=16)


def _hidden_dirs(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if path.name.startswith("."))


# -- layout and exact resume ------------------------------------------------------------------


def _training_objects(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, WarmupLR, nn.Module]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-15, weight_decay=0.0)
    return model, optimizer, WarmupLR(optimizer, warmup_steps=3), create_ema_model(model)


def _train(objects: tuple, steps: int) -> list[float]:
    """A few updates drawing from torch (data, dropout), numpy and python RNGs."""
    model, optimizer, scheduler, ema = objects
    losses = []
    for _ in range(steps):
        inputs = torch.randn(8, 4)
        target = inputs.sum(-1, keepdim=True) * np.random.rand() + random.random()
        loss = (model(inputs) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        update_ema(ema, model, decay=0.9)
        losses.append(loss.item())
    return losses


def _training_parts(objects: tuple, step: int) -> dict[str, Any]:
    model, optimizer, scheduler, ema = objects
    return {
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "sampler": {"seed": 42, "epoch": 1, "last_micro_batch_access_index": 24},
        "rng": rng.capture(),
        "running": {"epoch": 1, "step": step, "global_step": step, "actual_update_step": step},
    }


def test_layout_and_round_trip(tmp_path: Path) -> None:
    objects = _training_objects(0)
    _train(objects, 2)
    saved = _training_parts(objects, 2)
    manager = CheckpointManager(tmp_path / "ckpt", keep_n_latest=3)
    path = manager.save(2, saved)

    assert path == tmp_path / "ckpt" / "step-00000002"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["manifest.json", "lr_scheduler.json", "sampler.json", "running.json"]
        + [
            f"{name}.{ext}"
            for name in ("model", "ema", "optimizer", "rng")
            for ext in ("json", "safetensors")
        ]
    )
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 2 and list(manifest["parts"]) == list(saved)
    assert (
        manifest["files"]["model.safetensors"]["size"]
        == (path / "model.safetensors").stat().st_size
    )
    # Weights are plain safetensors with the state_dict's keys, readable by other tools.
    assert set(load_file(path / "model.safetensors")) == set(saved["model"])
    assert load_file(path / "ema.safetensors")["0.weight"].dtype == torch.float32

    assert manager.list() == [path] and manager.latest() == path
    loaded = CheckpointManager(tmp_path / "ckpt", keep_n_latest=3).load(path)
    for name, state in saved.items():
        assert_state_equal(loaded[name], state, name)
    assert list(manager.load(path, parts=["sampler"])) == ["sampler"]
    with pytest.raises(CheckpointError, match="no part"):
        manager.load(path, parts=["master"])


def test_resume_continues_bit_identically(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_n_latest=2)
    uninterrupted = _training_objects(0)
    _train(uninterrupted, 3)
    manager.save(3, _training_parts(uninterrupted, 3))
    expected_losses = _train(uninterrupted, 4)

    resumed = _training_objects(seed=123)  # different initial weights and RNG position
    state = manager.load(manager.latest())
    model, optimizer, scheduler, ema = resumed
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["lr_scheduler"])
    load_ema_state_dict(ema, state["ema"])
    rng.restore(state["rng"])

    assert _train(resumed, 4) == expected_losses
    for before, after in zip(uninterrupted, resumed, strict=True):
        if isinstance(before, nn.Module):
            assert_state_equal(after.state_dict(), before.state_dict())
    assert optimizer.param_groups[0]["lr"] == uninterrupted[1].param_groups[0]["lr"]


# -- atomicity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fail_at", ["first-part", "third-part", "manifest"])
def test_failed_save_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    manager = CheckpointManager(tmp_path, keep_n_latest=5)
    first = manager.save(1, _small_parts(1))
    written: list[str] = []
    write_part, write_manifest = checkpoint.save_state, checkpoint._write_json_durably

    def failing_write_part(state: Any, directory: Path, name: str) -> list[Path]:
        if len(written) == {"first-part": 0, "third-part": 2}.get(fail_at, -1):
            write_part(state, directory, name)  # the part's files exist when the error hits
            raise OSError("disk full")
        written.append(name)
        return write_part(state, directory, name)

    def failing_manifest(path: Path, document: dict) -> None:
        path.write_text('{"format": "opensora_kedro.chec')  # torn write
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_state", failing_write_part)
    if fail_at == "manifest":
        monkeypatch.setattr(checkpoint, "_write_json_durably", failing_manifest)
    with pytest.raises(OSError, match="disk full"):
        manager.save(2, _small_parts(2))

    monkeypatch.setattr(checkpoint, "save_state", write_part)
    monkeypatch.setattr(checkpoint, "_write_json_durably", write_manifest)
    assert manager.latest() == first and manager.list() == [first]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001"]
    assert_state_equal(manager.load(first), _small_parts(1))


def _spawn_saver(root: Path, mode: str, marker: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _CRASHING_SAVER, str(root), mode, str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until(
    condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"saver exited early: {process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail("saver did not reach the expected point in time")
        time.sleep(0.001)


@pytest.mark.parametrize("mode", ["pause", "anytime"])
def test_sigkill_during_save_keeps_last_complete_checkpoint(tmp_path: Path, mode: str) -> None:
    """A real crash: the saving process is SIGKILLed while inside ``save``.

    ``pause`` stops the child after it wrote the model part of step 3 (deterministic);
    ``anytime`` kills it as soon as a temporary directory shows up after two saves.
    """
    root, marker = tmp_path / "ckpt", tmp_path / "inside-save"
    manager = CheckpointManager(root, keep_n_latest=2)
    process = _spawn_saver(root, mode, marker)
    try:
        if mode == "pause":
            _wait_until(marker.exists, process)
        else:
            _wait_until(lambda: len(manager.list()) >= 2 and any(root.glob(".tmp-step-*")), process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    latest = manager.latest()
    assert latest is not None and latest == manager.list()[-1]
    step = CheckpointManager.step_of(latest)
    assert_state_equal(manager.load(latest), parts(step))
    if mode == "pause":
        assert step == 2
        (leftover,) = root.glob(".tmp-step-00000003-*")
        assert (leftover / "model.safetensors").exists() and not (
            leftover / "manifest.json"
        ).exists()
        # The next save (same step, after a restart) succeeds and clears the leftover.
        manager.save(3, _small_parts(3))
        assert _hidden_dirs(root) == []
        assert [CheckpointManager.step_of(p) for p in manager.list()] == [2, 3]


def test_same_step_is_replaced(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_n_latest=2)
    manager.save(5, _small_parts(1))
    path = manager.save(5, _small_parts(2))
    assert manager.list() == [path] and _hidden_dirs(tmp_path) == []
    assert_state_equal(manager.load(path), _small_parts(2))


# -- pruning and leftovers ---------------------------------------------------------------------


def test_prunes_to_keep_n_latest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_n_latest=2)
    for step in (10, 20, 30, 40):
        manager.save(step, _small_parts(step))
    assert [CheckpointManager.step_of(p) for p in manager.list()] == [30, 40]
    # A save below existing steps (a restart from an older checkpoint) is never pruned itself.
    manager.save(5, _small_parts(5))
    assert [CheckpointManager.step_of(p) for p in manager.list()] == [5, 30, 40]
    assert _hidden_dirs(tmp_path) == []


def test_keep_n_latest_zero_keeps_all(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_n_latest=0)
    for step in range(4):
        manager.save(step, {"running": {"step": step}})
    assert len(manager.list()) == 4


def test_incomplete_directories_are_ignored_and_leftovers_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path, keep_n_latest=3)
    good = manager.save(1, _small_parts(1))
    (tmp_path / "step-00000009").mkdir()  # final name but no manifest
    stale = tmp_path / ".tmp-step-00000008-crashed"
    stale.mkdir()
    (stale / "model.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not ours")
    with caplog.at_level(logging.WARNING):
        assert manager.latest() == good
    assert "step-00000009" in caplog.text and "missing" in caplog.text
    manager.save(2, _small_parts(2))
    assert not stale.exists() and (tmp_path / "notes.txt").exists()


# -- corruption and safety ---------------------------------------------------------------------


def _truncate(path: Path) -> None:
    with (path / "model.safetensors").open("r+b") as handle:
        handle.truncate(handle.seek(0, os.SEEK_END) // 2)


def _flip_byte(path: Path) -> None:
    with (path / "model.safetensors").open("r+b") as handle:
        handle.seek(-5, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-5, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _delete_part_file(path: Path) -> None:
    (path / "optimizer.json").unlink()


def _bad_manifest(path: Path) -> None:
    (path / "manifest.json").write_text("{not json")


@pytest.mark.parametrize("corrupt", [_truncate, _flip_byte, _delete_part_file, _bad_manifest])
def test_corrupted_checkpoint_is_skipped_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, corrupt: Callable[[Path], None]
) -> None:
    manager = CheckpointManager(tmp_path, keep_n_latest=3)
    older = manager.save(1, _small_parts(1))
    newer = manager.save(2, _small_parts(2))
    assert manager.latest() == newer  # verified (and cached) before the damage
    corrupt(newer)
    with caplog.at_level(logging.WARNING, logger="opensora_kedro.training.checkpoint"):
        assert manager.latest() == older
    assert "Ignoring checkpoint" in caplog.text and "step-00000002" in caplog.text
    with pytest.raises(CheckpointError):
        manager.load(newer)
    assert_state_equal(manager.load(older), _small_parts(1))


def test_latest_then_load_hashes_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = CheckpointManager(tmp_path, keep_n_latest=1)
    path = manager.save(1, _small_parts(1))
    hashed: list[str] = []
    sha256 = checkpoint._sha256
    monkeypatch.setattr(
        checkpoint, "_sha256", lambda file: hashed.append(file.name) or sha256(file)
    )
    fresh = CheckpointManager(tmp_path, keep_n_latest=1)
    fresh.load(fresh.latest())
    assert sorted(hashed) == sorted(p.name for p in path.iterdir() if p.name != "manifest.json")


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = _training_objects(0)
    _train(objects, 1)
    saved = _training_parts(objects, 1)
    path = CheckpointManager(tmp_path, keep_n_latest=1).save(1, saved)

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("unpickling during load")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = CheckpointManager(tmp_path, keep_n_latest=1).load(path)
    for name, state in saved.items():
        assert_state_equal(loaded[name], state, name)


@pytest.mark.parametrize(
    ("step", "parts_", "error"),
    [
        (-1, {"running": {}}, "step"),
        (1, {}, "at least one part"),
        (1, {"manifest": {}}, "part name"),
        (1, {"../escape": {}}, "part name"),
    ],
)
def test_invalid_save_arguments(tmp_path: Path, step: int, parts_: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        CheckpointManager(tmp_path, keep_n_latest=1).save(step, parts_)
    assert not any(tmp_path.iterdir())
