"""The GPU check kit: prove the cluster path on one bare GPU machine, without network.

    python3 benchmarks/gpu/run_checks.py                 # set up, then checks a-d (< 8 min)
    python3 benchmarks/gpu/run_checks.py --only b,d      # some checks (setup is always done)
    python3 benchmarks/gpu/run_checks.py --install-only  # set up from the parts present now

Run it from the repository root with the machine's own Python (the one that has torch). It
needs only the standard library: it makes ``.venv-gpu`` with ``--system-site-packages`` (the
machine's torch, numpy, pandas, pyarrow stay in use), installs the wheelhouse that
``build_wheelhouse.py`` made (``benchmarks/gpu/wheelhouse/part*/``; ``--no-index --no-deps``,
ColossalAI from its sdist) and runs each check in its own process group under a hard time limit
(the whole group is killed when it runs over), after building HybridAdam's kernels once (JIT,
cached in ``~/.cache/colossalai``; 300 s limit). Every check writes ``<out>/<name>.json``;
``<out>/summary.json`` holds them all; the exit code is 0 only when every check passed.

(a) ``check_training.py``: ``kedro run --env gpu`` of the data pipelines, ``vae_training`` and
    ``diffusion_stage1`` (ZeRO-2, HybridAdam, bf16, EMA, launched by ``colossalai run``),
    killed mid-run and resumed.
(b) ``check_loop_mfu.py``: the MMDiT of ``bench_mmdit_gpu.py`` through our Booster loop with
    ``torch.compile`` against the bare compiled step (MFU ratio; target >= 0.95).
(c) ``check_inference.py``: one t2v and one i2v clip from the models (a) trained.
(d) ``kedro opensora probe-batch-sizes --stage diffusion_stage1 --env gpu``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import site
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("run_checks")

ROOT = Path(__file__).resolve().parents[2]
KIT = Path(__file__).resolve().parent
TAIL_LINES = 30


@dataclass(frozen=True)
class Check:
    """One check: a command (``{python}``, ``{out}`` and ``{result}`` filled in) and its limit."""

    name: str
    limit_s: int
    command: tuple[str, ...]
    result: str = "{out}/{name}.result.json"  # the JSON the check writes about itself


CHECKS = (
    Check("a_training", 150, ("{python}", "benchmarks/gpu/check_training.py", "--result",
                              "{result}", "--logs", "{out}/a_training_logs")),
    Check("b_loop_mfu", 190, ("{python}", "benchmarks/gpu/check_loop_mfu.py", "--result",
                              "{result}")),
    Check("c_inference", 70, ("{python}", "benchmarks/gpu/check_inference.py", "--result",
                              "{result}")),
    Check("d_batch_probe", 40, ("{python}", "-m", "kedro", "opensora", "probe-batch-sizes",
                                "--stage", "diffusion_stage1", "--env", "gpu", "--out",
                                "{out}/d_batch_probe"),
          result="{out}/d_batch_probe/diffusion_stage1/report.json"),
)  # fmt: skip
SETUP_LIMIT_S = 60
# HybridAdam's CUDA and C++ kernels, compiled on first use (nvcc, ninja) and cached in
# ~/.cache/colossalai: built once here, under a limit of their own, not inside a check's.
KERNELS = Check("kernels", 300, ("{python}", "-c", (
    "from colossalai.kernel.kernel_loader import CPUAdamLoader, FusedOptimizerLoader\n"
    "CPUAdamLoader().load()\nFusedOptimizerLoader().load()\nprint('HybridAdam kernels ready')"
)))  # fmt: skip


@dataclass
class Outcome:
    """How a command ended."""

    rc: int | None
    seconds: float
    timed_out: bool
    tail: list[str] = field(default_factory=list)


def run_limited(command: list[str], limit_s: float, log: Path, env: dict | None = None) -> Outcome:
    """Run ``command`` in a process group of its own, output to ``log``; past ``limit_s`` the
    whole group (launched workers included, unless they left it) is killed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=env, start_new_session=True)  # fmt: skip
        try:
            process.wait(timeout=limit_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    lines = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
    return Outcome(None if timed_out else process.returncode, round(time.monotonic() - started, 1),
                   timed_out, lines)  # fmt: skip


def record(name: str, limit_s: int, outcome: Outcome, result: Path | None) -> dict:
    """A check's JSON: how it ended, plus what the check itself reported (``result``)."""
    details = None
    if result is not None and result.exists():
        try:
            details = json.loads(result.read_text())
        except json.JSONDecodeError as error:
            details = {"unreadable": str(error)}
    passed = outcome.rc == 0 and not outcome.timed_out
    if isinstance(details, dict) and details.get("ok") is False:
        passed = False
    return {"name": name, "ok": passed, "rc": outcome.rc, "seconds": outcome.seconds,
            "limit_s": limit_s, "timed_out": outcome.timed_out, "details": details,
            "tail": [] if passed else outcome.tail}  # fmt: skip


def summarize(records: list[dict], total_s: float, device: dict) -> dict:
    """The kit's summary: every check's record, and whether all passed."""
    return {"ok": bool(records) and all(r["ok"] for r in records), "total_s": round(total_s, 1),
            "device": device, "passed": [r["name"] for r in records if r["ok"]],
            "failed": [r["name"] for r in records if not r["ok"]], "checks": records}  # fmt: skip


def fill(command: tuple[str, ...], **values: str) -> list[str]:
    """A check's command with its placeholders filled."""
    return [part.format(**values) for part in command]


def select(only: str | None) -> list[Check]:
    """The checks named in ``only`` (``a,c`` or ``a_training,c_inference``), else all."""
    if not only:
        return list(CHECKS)
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    chosen = [c for c in CHECKS if c.name in wanted or c.name.split("_")[0] in wanted]
    unknown = wanted - {c.name for c in chosen} - {c.name.split("_")[0] for c in chosen}
    if unknown:
        raise SystemExit(f"unknown check(s) {sorted(unknown)}; have {[c.name for c in CHECKS]}")
    return chosen


def wheelhouse_files(wheelhouse: Path) -> tuple[list[Path], list[Path]]:
    """``(wheels, sdists)`` in the wheelhouse and its ``part*`` folders."""
    files = sorted(p for p in wheelhouse.glob("**/*") if p.is_file())
    wheels = [p for p in files if p.suffix == ".whl"]
    sdists = [p for p in files if p.name.endswith(".tar.gz")]
    return wheels, sdists


def venv_env(venv: Path) -> dict[str, str]:
    """The checks' environment: the venv first on PATH, the project's sources importable."""
    # the venv first, then this Python's own scripts (the machine's torch stack)
    path = os.pathsep.join([str(venv / "bin"), str(Path(sys.executable).parent),
                            os.environ.get("PATH", "")])  # fmt: skip
    python_path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PATH": path, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1",
            "KEDRO_DISABLE_TELEMETRY": "true", "BUILD_EXT": "0",
            "VIRTUAL_ENV": str(venv)}  # fmt: skip


def venv_command(venv: Path) -> list[str]:
    """Make the venv on this Python, seeing its packages (the machine's torch)."""
    return [sys.executable, "-m", "venv", "--system-site-packages", str(venv)]


def install_commands(venv: Path, wheelhouse: Path) -> list[list[str]]:
    """Install the wheelhouse offline, without dependency resolution (the plan is complete)."""
    wheels, sdists = wheelhouse_files(wheelhouse)
    if not wheels:
        raise SystemExit(f"no wheels under {wheelhouse}: build them with build_wheelhouse.py")
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--no-build-isolation"]  # fmt: skip
    commands = [[*pip, *map(str, wheels)]]
    if sdists:  # ColossalAI (and any sdist-only package): no deps, no kernels built (BUILD_EXT=0)
        commands.append([*pip, *map(str, sdists)])
    return commands


def site_packages(venv: Path) -> Path:
    """The venv's site-packages (made by this Python, so of its version)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def link_parent_site(venv: Path) -> Path | None:
    """When this Python is itself a venv (the GPU image's is ``/opt/torch/.venv``),
    ``--system-site-packages`` shows the base interpreter's packages, not this venv's torch:
    a ``.pth`` file adds them, after the new venv's own (whose versions win)."""
    if sys.prefix == sys.base_prefix:
        return None
    pth = site_packages(venv) / "_gpu_kit_parent_site.pth"
    pth.write_text("".join(f"{path}\n" for path in site.getsitepackages()))
    return pth


def add_torchrun(venv: Path) -> Path:
    """``torchrun`` in the venv: ``colossalai run`` starts the ``torchrun`` first on PATH,
    whose Python runs the workers; the machine's own would lack this venv's packages."""
    script = venv / "bin" / "torchrun"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\n\n"
                      "from torch.distributed.run import main\n\nsys.exit(main())\n")  # fmt: skip
    script.chmod(0o755)
    return script


def setup(venv: Path, wheelhouse: Path, out: Path) -> dict:
    """Run the setup commands under one time limit; the record of the ``setup`` step."""
    deadline = time.monotonic() + SETUP_LIMIT_S
    log = out / "setup.log"
    total = Outcome(0, 0.0, False)
    if not (venv / "bin" / "python").exists():
        total = run_limited(venv_command(venv), SETUP_LIMIT_S, log.with_suffix(".venv.log"))
        if total.rc != 0:
            return record("setup", SETUP_LIMIT_S, total, None)
    link_parent_site(venv)
    add_torchrun(venv)
    for number, command in enumerate(install_commands(venv, wheelhouse)):
        left = max(deadline - time.monotonic(), 1)
        outcome = run_limited(command, left, log.with_suffix(f".{number}.log"), venv_env(venv))
        total = Outcome(outcome.rc, round(total.seconds + outcome.seconds, 1), outcome.timed_out,
                        outcome.tail)  # fmt: skip
        if outcome.rc != 0:
            break
    return record("setup", SETUP_LIMIT_S, total, None)


def run_check(check: Check, venv: Path, out: Path) -> dict:
    """Run one check under its limit; its record, also written to ``<out>/<name>.json``."""
    values = {"python": str(venv / "bin" / "python"), "out": str(out), "name": check.name}
    result = Path(check.result.format(**values))
    result.unlink(missing_ok=True)
    command = fill(check.command, **values, result=str(result))
    outcome = run_limited(command, check.limit_s, out / f"{check.name}.log", venv_env(venv))
    entry = record(check.name, check.limit_s, outcome, result)
    write(out / f"{check.name}.json", entry)
    logger.info("%s: %s in %.0f s (limit %d s)", check.name, "ok" if entry["ok"] else "FAILED",
                outcome.seconds, check.limit_s)  # fmt: skip
    return entry


def device_info() -> dict:
    """The GPU as nvidia-smi names it (empty where there is none)."""
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"nvidia_smi": text.splitlines()}


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheelhouse", type=Path, default=KIT / "wheelhouse")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-gpu")
    parser.add_argument("--out", type=Path, default=KIT / "out")
    parser.add_argument("--only", default=None, help="checks to run, e.g. a,c (default: all)")
    parser.add_argument("--install-only", action="store_true", help="set up, run no check")
    parser.add_argument(
        "--archive",
        type=Path,
        default=None,
        help="also pack the results folder into this .tar.gz (one file to copy)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    checks = select(args.only)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    records = [setup(args.venv, args.wheelhouse, args.out)]
    write(args.out / "setup.json", records[0])
    logger.info(
        "setup: %s in %.0f s", "ok" if records[0]["ok"] else "FAILED", records[0]["seconds"]
    )
    steps = []
    if records[0]["ok"] and (site_packages(args.venv) / "colossalai").is_dir():
        steps.append(KERNELS)  # (absent while only the first part of the wheelhouse is in)
    if records[0]["ok"] and not args.install_only:
        steps += checks
    for check in steps:
        records.append(run_check(check, args.venv, args.out))
        if check is KERNELS and not records[-1]["ok"]:
            break  # every check needs HybridAdam
    summary = summarize(records, time.monotonic() - started, device_info())
    write(args.out / "summary.json", summary)
    logger.info("summary: %s; %s", "all passed" if summary["ok"] else f"failed {summary['failed']}",
                args.out / "summary.json")  # fmt: skip
    if args.archive:
        with tarfile.open(args.archive, "w:gz") as archive:
            archive.add(args.out, arcname=args.out.name)
        logger.info("results packed into %s", args.archive)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
