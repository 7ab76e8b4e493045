"""Running a training job: in the Kedro process, or on workers started by ``colossalai run``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import typing
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import mlflow
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from opensora_kedro.config.hardware import (
    Hardware,
    agree,
    detect_hardware,
    resolve_on_workers,
)
from opensora_kedro.runtime.distributed import free_port
from opensora_kedro.runtime.params import LauncherParams

logger = logging.getLogger(__name__)

READY_FILE = "ready"  # written by rank 0 once every worker joined the process group
RESULT_FILE = "result.json"
TAIL_LINES = 40
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what bash can export


P = TypeVar("P", bound=BaseModel)


def entry_point(function: Callable) -> str:
    """The ``module:function`` name a worker imports to run ``function``, checked now (not on
    the workers) to lead back to that very function.

    Raises:
        ValueError: ``function`` is not a module-level function a worker can import.
    """
    name = f"{function.__module__}:{function.__qualname__}"
    try:
        found = resolve_entry(name)
    except (ImportError, AttributeError):
        found = None
    if found is not function:
        raise ValueError(f"{name}: a job's entry must be a module-level function")
    return name


def resolve_entry(name: str) -> Callable:
    """The function an :func:`entry_point` name stands for."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def _entry(value: Any) -> Callable:
    # A spec read back from JSON names its entry; one built in this process holds it.
    function = resolve_entry(value) if isinstance(value, str) else value
    entry_point(function)
    return function


# The job's function itself; it crosses to the workers as its checked ``module:function``.
EntryRef = Annotated[
    Callable, BeforeValidator(_entry), PlainSerializer(entry_point, return_type=str)
]


class JobSpec(BaseModel, Generic[P]):
    """Everything a job needs, and nothing that lives only in the Kedro process: its entry
    function (called as ``entry(spec)`` on every rank), its typed parameter group, and the
    paths of what it reads. Crosses to the workers as ``model_dump_json``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    entry: EntryRef
    params: P
    output_dir: str  # checkpoints, the job's own files
    name: str = "job"  # what it is (a stage's name): its metrics are prefixed with it
    inputs: dict[str, str] = {}  # dataset name -> path
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    backend: str = "auto"  # launcher.backend, applied on every worker

    @property
    def job_dir(self) -> Path:
        return Path(self.output_dir) / "job"


def spec_type(entry: Callable) -> type[JobSpec]:
    """The ``JobSpec[...]`` its entry's signature declares: what a worker reads the spec as."""
    annotation = typing.get_type_hints(entry).get("spec")
    if not (isinstance(annotation, type) and issubclass(annotation, JobSpec)):
        raise TypeError(f"{entry_point(entry)} must declare its parameter `spec: JobSpec[...]`")
    return annotation


def read_spec(text: str) -> JobSpec:
    """A spec written by the launcher, its parameters validated as its entry declares."""
    entry = resolve_entry(json.loads(text)["entry"])
    return spec_type(entry).model_validate_json(text)


def make_job_spec(
    entry: Callable, params: P, output_dir: str, inputs: dict[str, str], name: str = "job"
) -> JobSpec:
    """A spec of ``entry``'s job ``name`` on ``params``, logging into the active MLflow run."""
    active = mlflow.active_run()  # kedro-mlflow's run: the job logs its steps into it
    return spec_type(entry)(
        entry=entry,
        params=params,
        output_dir=str(output_dir),
        name=name,
        inputs=inputs,
        mlflow_tracking_uri=mlflow.get_tracking_uri(),
        mlflow_run_id=active.info.run_id if active else None,
    )


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Run ``spec.entry`` in this process's process group (made if missing); rank 0's result."""
    from opensora_kedro.runtime.distributed import process_group, rank

    with process_group(spec.backend):
        if rank() == 0:
            spec.job_dir.mkdir(parents=True, exist_ok=True)
            (spec.job_dir / READY_FILE).touch()
        if spec.params.auto_on_workers:
            spec.params = resolve_on_workers(spec.params, workers_hardware())
        return spec.entry(spec)


def workers_hardware() -> Hardware:
    """What every worker of the job offers (each detects its own; all agree on the least)."""
    import torch.distributed as dist

    from opensora_kedro.runtime.compat import has_cuda

    own = detect_hardware() if has_cuda() else Hardware(0, 0.0, False)  # gloo: a CPU job
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return own
    found: list = [None] * dist.get_world_size()
    dist.all_gather_object(found, own)
    return agree(found)


def launch(spec: JobSpec, launcher: LauncherParams) -> dict[str, Any]:
    """Run the job as the ``launcher`` parameters say; returns rank 0's result dict."""
    spec.backend = launcher.backend
    if launcher.type == "inprocess":
        return run_job(spec)
    return _launch_workers(spec, launcher)


def _command(spec_path: Path, launcher: LauncherParams) -> list[str]:
    """``colossalai run`` for one node or a hostfile (it starts every host over ssh); torchrun
    for several nodes without a hostfile, where each node is started on its own."""
    bin_dir = Path(sys.executable).parent
    entry = ["-m", "opensora_kedro.runtime.worker", "--spec", str(spec_path)]
    procs = ["--nproc_per_node", str(launcher.nproc_per_node)]
    if launcher.nnodes > 1 and not launcher.hostfile:
        return [str(bin_dir / "torchrun"), *procs, "--nnodes", str(launcher.nnodes),
                "--node_rank", str(launcher.node_rank), "--master_addr", launcher.master_addr,
                "--master_port", str(launcher.master_port), *entry]  # fmt: skip
    port = launcher.master_port if launcher.hostfile else free_port()
    command = [str(bin_dir / "colossalai"), "run", *procs, "--master_port", str(port)]
    if launcher.hostfile:
        command += ["--hostfile", launcher.hostfile, "--num_nodes", str(launcher.nnodes),
                    "--master_addr", launcher.master_addr]  # fmt: skip
    return [*command, *entry]


def _is_noise(line: str) -> bool:
    # On a failure `colossalai run` prints the command it ran with every environment
    # variable of the launching process (secrets included): never relay that.
    return " && export " in line or line.startswith("Command: ") or len(line) > 4000


def _relay(stream, tail: deque) -> None:
    for raw in iter(stream.readline, ""):
        line = raw.rstrip("\n")
        if _is_noise(line):
            continue
        tail.append(line)
        logger.info("[job] %s", line)


def _worker_error(job_dir: Path, tail: deque) -> str:
    errors = sorted(job_dir.glob("error-rank*.txt"))
    if errors:
        text = errors[0].read_text()
        return f"{errors[0].stem}:\n" + "\n".join(text.splitlines()[-TAIL_LINES:])
    return "\n".join(tail)


def worker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment ``colossalai run`` gets: this Python's ``bin`` first on ``PATH`` (it
    calls ``torchrun`` through the shell) and only variables bash can ``export`` (make, for
    one, passes ``-*-command-variables-*-``, on which the workers' shell line fails)."""
    env = {name: value for name, value in environ.items() if _SHELL_NAME.fullmatch(name)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _launch_workers(spec: JobSpec, launcher: LauncherParams) -> dict[str, Any]:
    job_dir = spec.job_dir
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in [READY_FILE, RESULT_FILE, *[p.name for p in job_dir.glob("error-rank*.txt")]]:
        (job_dir / stale).unlink(missing_ok=True)
    spec_path = job_dir / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=1))
    command = _command(spec_path, launcher)
    logger.info(
        "launching %d x %d workers: %s",
        launcher.nnodes,
        launcher.nproc_per_node,
        " ".join(command),
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=worker_env(os.environ), start_new_session=True)  # fmt: skip
    tail: deque = deque(maxlen=TAIL_LINES)
    reader = threading.Thread(target=_relay, args=(process.stdout, tail), daemon=True)
    reader.start()
    started = time.monotonic()
    # Only global rank 0 (on node 0) writes the ready and result files; without a shared
    # file system the other nodes of a torchrun job judge by their workers' exit code.
    leader = launcher.node_rank == 0 or bool(launcher.hostfile)
    try:
        while process.poll() is None:
            waited = time.monotonic() - started
            joined = (job_dir / READY_FILE).exists() or not leader
            if not joined and waited > launcher.rdzv_timeout_s:
                raise TimeoutError(
                    f"the workers did not all join within launcher.rdzv_timeout_s="
                    f"{launcher.rdzv_timeout_s} s; check launcher.master_addr="
                    f"{launcher.master_addr}, launcher.master_port, launcher.hostfile and "
                    f"launcher.nnodes={launcher.nnodes}"
                )
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(timeout=5)
    if process.returncode == 0 and not leader:
        return {"checkpoint": None, "export": None, "update_steps": None, "history": []}
    if process.returncode != 0 or not (job_dir / RESULT_FILE).exists():
        raise RuntimeError(
            f"training job failed (exit {process.returncode}):\n{_worker_error(job_dir, tail)}"
        )
    return json.loads((job_dir / RESULT_FILE).read_text())
