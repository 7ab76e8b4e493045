"""Kit check (a): the training path users run, on a GPU, through Kedro and ColossalAI.

    .venv-gpu/bin/python benchmarks/gpu/check_training.py --result a.json

``kedro run --env gpu`` (conf/gpu: ``colossalai run`` with one process, ZeRO-2, HybridAdam,
bf16, EMA): the data pipelines, ``vae_training``, then ``diffusion_stage1`` started with no step
limit, killed (every process of the run, workers included) once a checkpoint past step 20 is
written, and run again: it must resume from the latest checkpoint and finish 20 steps later.
Earlier ``diffusion_stage1`` checkpoints are moved aside first, never deleted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("check_training")

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = ROOT / "data/06_models/diffusion_stage1_training"
CHECKPOINTS = RUN_DIR / "checkpoints"
STEP = re.compile(r"^step-(\d{8,})$")
KILL_AFTER_STEP = 20
MORE_STEPS = 20


class Kedro:
    """``kedro run`` in an env, with ``--params`` common to every run of the check."""

    def __init__(self, env: str, params: str) -> None:
        self.env, self.params = env, params

    def command(self, pipeline_args: list[str], params: str = "") -> list[str]:
        merged = ",".join(p for p in (self.params, params) if p)
        extra = ["--params", merged] if merged else []
        return [sys.executable, "-m", "kedro", "run", "--env", self.env, *pipeline_args, *extra]


def latest_step(checkpoints: Path) -> int | None:
    """The step of the newest complete checkpoint (``step-XXXXXXXX``; temp folders skipped)."""
    steps = [int(m[1]) for p in checkpoints.glob("step-*") if (m := STEP.match(p.name))]
    return max(steps, default=None)


def first_logged_step(result_file: Path) -> int | None:
    """The first step the job's metrics history holds (its ``result.json``)."""
    if not result_file.exists():
        return None
    history = json.loads(result_file.read_text()).get("history") or []
    return min((entry["step"] for entry in history), default=None)


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill_run(process: subprocess.Popen) -> None:
    """SIGKILL the Kedro process's group and every group its children started (the launcher
    starts ``colossalai run`` in a session of its own), as a crashed node would end."""
    groups = {os.getpgid(process.pid)}
    pending = [process.pid]
    while pending:
        pid = pending.pop()
        for child in children(pid):
            try:
                groups.add(os.getpgid(child))
            except ProcessLookupError:
                continue
            pending.append(child)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def run(kedro: Kedro, name: str, args: list[str], logs: Path, params: str = "") -> dict:
    """A ``kedro run`` to completion; its log in ``logs/<name>.log``."""
    started = time.monotonic()
    with (logs / f"{name}.log").open("w") as handle:
        command = kedro.command(args, params)
        rc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    return {"name": name, "rc": rc, "seconds": round(time.monotonic() - started, 1)}


def run_and_kill(kedro: Kedro, logs: Path, poll_s: float = 0.1) -> dict:
    """``diffusion_stage1`` without a step limit, killed once a checkpoint past
    ``KILL_AFTER_STEP`` exists."""
    started = time.monotonic()
    params = "diffusion_stage1.max_steps=100000,diffusion_stage1.epochs=100000"
    with (logs / "diffusion_killed.log").open("w") as handle:
        process = subprocess.Popen(
            kedro.command(["--pipeline", "diffusion_stage1"], params), stdout=handle,
            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        while process.poll() is None and (latest_step(CHECKPOINTS) or 0) < KILL_AFTER_STEP:
            time.sleep(poll_s)
        ended_by_itself = process.poll() is not None
        if not ended_by_itself:
            kill_run(process)
    return {"name": "diffusion_killed", "rc": process.returncode, "killed": not ended_by_itself,
            "latest_step": latest_step(CHECKPOINTS),
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def move_aside(path: Path) -> str | None:
    """Rename an earlier run folder out of the way; returns its new name."""
    if not path.exists():
        return None
    aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    return aside.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--env", default="gpu", help="Kedro env (gpu; local runs it on a CPU)")
    parser.add_argument("--params", default="", help="--params for every run, e.g. shorter runs")
    parser.add_argument(
        "--skip-prep",
        action="store_true",
        help="keep the data and VAE of an earlier run: only kill and resume",
    )
    args = parser.parse_args()
    kedro = Kedro(args.env, args.params)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.logs.mkdir(parents=True, exist_ok=True)
    result: dict = {"ok": False, "steps": []}

    def save() -> None:
        args.result.write_text(json.dumps(result, indent=1))

    prep = (
        ("data", ["--pipelines", "demo_data,data_processing,text_embedding"]),
        ("vae_training", ["--pipeline", "vae_training"]),
    )
    for name, run_args in () if args.skip_prep else prep:
        result["steps"].append(run(kedro, name, run_args, args.logs))
        logger.info("%s", result["steps"][-1])
        save()
        if result["steps"][-1]["rc"]:
            return 1
    result["vae_export"] = (ROOT / "data/06_models/vae/model.safetensors").exists()
    result["moved_aside"] = move_aside(RUN_DIR)
    killed = run_and_kill(kedro, args.logs)
    result["steps"].append(killed)
    logger.info("%s", killed)
    save()
    if not killed["killed"] or not killed["latest_step"]:
        return 1
    target = killed["latest_step"] + MORE_STEPS
    more = f"diffusion_stage1.max_steps={target}"
    resumed = run(kedro, "diffusion_resumed", ["--pipeline", "diffusion_stage1"], args.logs, more)
    log = (args.logs / "diffusion_resumed.log").read_text(errors="replace")
    resumed["resume_logged"] = "resumed from" in log
    resumed["first_logged_step"] = first_logged_step(RUN_DIR / "job" / "result.json")
    resumed["final_step"] = latest_step(CHECKPOINTS)
    result["steps"].append(resumed)
    result["model_export"] = (ROOT / "data/06_models/diffusion_stage1/model.safetensors").exists()
    result["ok"] = (
        resumed["rc"] == 0 and resumed["final_step"] == target
        # a fresh start would log from step log_every on; a resumed run after the kill point
        and (resumed["first_logged_step"] or 0) > killed["latest_step"]
        and result["vae_export"] and result["model_export"]
    )  # fmt: skip
    save()
    logger.info("%s", result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
