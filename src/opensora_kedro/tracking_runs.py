"""The project's MLflow runs: readable names and tags, runs left RUNNING by a killed process,
and artifact locations that follow the project when it is moved or copied.

MLflow stores artifact locations as absolute paths (``resolve_uri_if_local``), so a project
moved or copied with its ``mlflow.db`` and ``mlruns/`` would show (or write) another folder's
artifacts. With a SQLite store inside the project, :func:`rebase_artifacts` rewrites the
stored locations under ``<old root>/mlruns`` to this project's ``mlruns`` when the artifacts
are here.
"""

from __future__ import annotations

import logging
import re
import socket
import sqlite3
import subprocess
from contextlib import closing
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

ARTIFACT_ROOT = "mlruns"
# (table, column) holding artifact locations in MLflow 3's SQL store.
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)
_LOCAL_LOCATION = re.compile(rf"^(?P<scheme>file://)?(?P<root>/.*?)/{ARTIFACT_ROOT}(?P<rest>/.*)?$")
PROJECT_TAG, HOST_TAG = "opensora.project_dir", "opensora.host"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI: "machine learning", not GenAI
VERSIONED = ("kedro", "kedro-mlflow", "torch", "colossalai", "transformers", "mlflow")


def sqlite_path(tracking_uri: str, project: Path) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative to ``project``)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    return path if path.is_absolute() else project / path


def rebase_artifacts(tracking_uri: str, project: Path) -> int:
    """Point artifact locations stored under another folder's ``mlruns`` at this project's,
    where the artifacts exist here; returns how many rows changed (0 for non-SQLite stores)."""
    database = sqlite_path(tracking_uri, project)
    if database is None or not database.is_file():
        return 0
    project = project.resolve()
    changed, old_roots = 0, set()
    with closing(sqlite3.connect(database)) as connection, connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        for table, column in _LOCATION_COLUMNS:
            if table not in tables:
                continue
            rows = connection.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall()
            for (location,) in rows:
                rebased = _rebased(location or "", project)
                if rebased is None:
                    continue
                old_roots.add(_LOCAL_LOCATION.match(location).group("root"))
                cursor = connection.execute(
                    f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (rebased, location)
                )
                changed += cursor.rowcount
    if changed:
        logger.info("MLflow: %d artifact location(s) moved from %s to %s (the project moved)",
                    changed, ", ".join(sorted(old_roots)), project)  # fmt: skip
    return changed


def _rebased(location: str, project: Path) -> str | None:
    match = _LOCAL_LOCATION.match(location)
    if match is None or Path(match.group("root")) == project:
        return None
    rest = match.group("rest") or ""
    if not (project / ARTIFACT_ROOT / rest.lstrip("/")).exists():
        return None  # the artifacts are not here: a location chosen on purpose
    return f"{match.group('scheme') or ''}{project}/{ARTIFACT_ROOT}{rest}"


def close_abandoned_runs(client, experiment_id: str, project: Path) -> list[str]:
    """Mark FAILED this project's runs on this host still RUNNING: their process is gone (the
    caller holds the project's run lock, so no other run of this project is alive)."""
    query = (f"attributes.status = 'RUNNING' and tags.`{PROJECT_TAG}` = '{project.resolve()}' "
             f"and tags.`{HOST_TAG}` = '{socket.gethostname()}'")  # fmt: skip
    closed = []
    for run in client.search_runs([experiment_id], filter_string=query, max_results=1000):
        client.set_tag(run.info.run_id, "opensora.ended", "its process ended without closing it")
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
        logger.warning("MLflow run %s (%s) was left RUNNING by a process that ended: marked "
                       "FAILED", run.info.run_name, run.info.run_id)  # fmt: skip
    return closed


def runs_url(
    experiment_id: str, run_id: str | None = None, ui: str = "http://127.0.0.1:5000"
) -> str:
    """The MLflow UI page of an experiment's runs (or of one run), in its model-training view
    (MLflow 3 opens on its GenAI view otherwise)."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{ui}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def print_runs_url(tracking_uri: str = "sqlite:///mlflow.db", experiment: str = "opensora_kedro",
                   ui: str = "http://127.0.0.1:5000") -> None:  # fmt: skip
    """For ``make mlflow-ui``: where the project's runs are (stdout)."""
    from mlflow import MlflowClient

    found = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        print("no MLflow runs yet: `make run` first")  # noqa: T201 - a command's output
    else:
        print(f"MLflow runs: {runs_url(found.experiment_id, ui=ui)}")  # noqa: T201


def run_name(pipelines: list[str], env: str, run_id: str) -> str:
    """``<pipeline>@<env>-<short id>``, e.g. ``__default__@local-1a2b3c4d``."""
    return f"{'+'.join(pipelines)}@{env}-{run_id[:8]}"


def run_tags(project: Path, env: str, pipelines: list[str], runner: object) -> dict[str, str]:
    """What a run was: code (git commit, uncommitted changes), env, pipeline, runner, the
    versions of the main packages, and where it ran."""
    tags = {
        "env": env,
        "pipeline": "+".join(pipelines),
        "runner": runner_name(runner),
        PROJECT_TAG: str(project.resolve()),
        HOST_TAG: socket.gethostname(),
        **git_state(project),
    }
    for package in VERSIONED:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {key: value for key, value in tags.items() if value}


def runner_name(runner: object) -> str:
    """The runner's class name, from the runner or from the repr Kedro passes in run_params."""
    if runner is None:
        return ""
    if isinstance(runner, str):
        match = re.search(r"(\w+) object at 0x", runner)
        return match.group(1) if match else runner
    return type(runner).__name__


def git_state(project: Path) -> dict[str, str]:
    """``mlflow.source.git.commit`` and ``git.dirty`` of the project, when it is a git checkout."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True,
                                  timeout=10, check=True)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"mlflow.source.git.commit": commit, "git.dirty": str(bool(status)).lower()}
