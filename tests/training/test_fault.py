"""Fault test: a training process killed with SIGKILL resumes from its last complete checkpoint
and then computes exactly what an uninterrupted run computes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from opensora_kedro.runtime.launcher import JobSpec, launch
from opensora_kedro.runtime.params import LauncherParams
from tests.conftest import PROJECT_ROOT
from tests.training.test_loop import PARAMS
from tests.training.toy_job import ToyParams, run

FAULT = {**PARAMS, "max_steps": 40, "ckpt_every": 3, "log_every": 1, "step_sleep": 0.01}


def _start(spec: JobSpec) -> subprocess.Popen:
    spec.job_dir.mkdir(parents=True, exist_ok=True)
    path = spec.job_dir / "spec.json"
    path.write_text(spec.model_dump_json())
    # this checkout's code, not whichever copy the environment has installed
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "src")]),
    }
    command = [sys.executable, "-m", "opensora_kedro.runtime.worker", "--spec", str(path)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["between_checkpoints", "during_a_checkpoint_write"])
def test_killed_run_resumes_exactly(tmp_path, moment):
    whole = launch(
        JobSpec[ToyParams](entry=run, params=FAULT, output_dir=str(tmp_path / "whole")),
        LauncherParams(),
    )
    losses = {entry["step"]: entry["loss"] for entry in whole["history"]}

    spec = JobSpec[ToyParams](entry=run, params=FAULT, output_dir=str(tmp_path / "killed"))
    checkpoints = tmp_path / "killed" / "checkpoints"
    process = _start(spec)
    if moment == "between_checkpoints":
        _kill_when(process, lambda: (checkpoints / "step-00000006").exists())
    else:
        _kill_when(process, lambda: checkpoints.exists() and any(
            p.name.startswith(".tmp-step-00000009") for p in checkpoints.iterdir()))  # fmt: skip
    survivors = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step-"))
    assert survivors and "step-00000040" not in survivors

    resumed = launch(spec, LauncherParams())
    first = resumed["history"][0]["step"]
    assert f"step-{first - 1:08d}" == survivors[-1]  # from the last complete checkpoint
    assert {e["step"]: e["loss"] for e in resumed["history"]} == {
        s: losses[s] for s in range(first, 41)
    }
    final = [json.loads((tmp_path / n / "weights.json").read_text()) for n in ("whole", "killed")]
    assert final[0] == final[1]
