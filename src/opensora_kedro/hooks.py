"""Project hooks: one run per project at a time, checks before any node or worker starts, and
MLflow runs that say what they were."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline

from opensora_kedro.config.errors import PARAMS_ORIGIN, ConfigError, UserConfigError
from opensora_kedro.config.hardware import detect_hardware
from opensora_kedro.config.loader import ProjectConfigLoader
from opensora_kedro.config.preflight import (
    DatasetInput,
    dataset_issues,
    machine_issues,
    parameter_path_issues,
)
from opensora_kedro.files import resolve_path
from opensora_kedro.runlock import RunLock
from opensora_kedro.tracking_runs import (
    EXPERIMENT_KIND_TAG,
    close_abandoned_runs,
    rebase_artifacts,
    run_name,
    run_tags,
    runs_url,
)

logger = logging.getLogger(__name__)


def pipeline_groups(pipeline: Pipeline, params: dict[str, Any]) -> list[str]:
    """The parameter groups the pipeline's nodes read (every group for ``parameters``)."""
    inputs = pipeline.inputs() | {i for node in pipeline.nodes for i in node.inputs}
    if "parameters" in inputs:
        return sorted(params)
    return sorted(
        {
            name.removeprefix("params:").split(".")[0]
            for name in inputs
            if name.startswith("params:")
        }
    )


def _location(dataset: Any) -> str | None:
    try:
        described = dataset._describe()
    except Exception:  # a dataset that cannot describe itself has nothing to check
        return None
    for key in ("filepath", "path"):
        if described.get(key):
            return str(described[key])
    return None


def _exists(dataset: Any) -> bool:
    try:
        return bool(dataset.exists())
    except Exception:
        return False


def _problem(dataset: Any) -> str | None:
    """What a dataset's own ``check()`` finds wrong with its content (e.g. a table whose
    files are not at its root)."""
    check = getattr(dataset, "check", None)
    if not callable(check):
        return None
    try:
        check()
    except UserConfigError as error:
        return "; ".join([error.header, *error.messages])
    return None


def _datasets(catalog: DataCatalog, names: set[str]) -> dict[str, Any]:
    found = {}
    for name in sorted(names):
        if name == "parameters" or name.startswith("params:"):
            continue
        try:
            found[name] = catalog.get(name)
        except Exception:  # not in the catalog: a MemoryDataset made at run time
            continue
    return {name: dataset for name, dataset in found.items() if dataset is not None}


def check_before_run(
    loader: ProjectConfigLoader, pipeline: Pipeline, catalog: DataCatalog, base_dir: Path
) -> None:
    """Raise :class:`ConfigError` listing every input of the run that is missing and every
    setting this machine cannot run, before any node or worker starts."""
    resolved = loader.resolved_parameters()
    groups = pipeline_groups(pipeline, resolved.params)
    produced = [
        Path(location)
        for dataset in _datasets(catalog, pipeline.all_outputs()).values()
        if (location := _location(dataset))
    ]
    produced += [
        resolve_path(path, base_dir)
        for group in groups
        if group in resolved.models
        for path in resolved.models[group].output_paths()
    ]
    inputs = []
    for name, dataset in _datasets(catalog, pipeline.inputs()).items():
        optional = bool(getattr(dataset, "loads_when_missing", False))
        exists = optional or _exists(dataset)
        inputs.append(DatasetInput(name, _location(dataset), exists, optional, _problem(dataset)))
    issues = dataset_issues(inputs, produced)
    issues += parameter_path_issues(resolved.models, groups, resolved.sources, produced, base_dir)
    issues += machine_issues(resolved.models, groups, detect_hardware(), resolved.sources)
    unread = sorted({key[0] for key, origin in resolved.sources.items()
                     if origin == PARAMS_ORIGIN and key and key[0] not in groups})  # fmt: skip
    for group in unread:
        logger.warning("--params sets %s, which no node of this run reads", group)
    if issues:
        raise ConfigError(issues, loader.run_env, what="problem(s) found before running")


def typed_parameter(models: dict[str, Any], name: str) -> Any:
    """The validated value of ``params:<group>.<key>...``: the group's typed model, or the
    attribute (a nested model, a value) the dotted key path leads to."""
    group, *path = name.removeprefix("params:").split(".")
    value = models[group]
    for key in path:
        value = value[key] if isinstance(value, dict) else getattr(value, key)
    return value


class ProjectHooks:
    """Takes the project's run lock, checks the run's inputs and machine first, and hands
    every node its parameters as the typed objects validated at the start."""

    def __init__(self) -> None:
        self._loader: ProjectConfigLoader | None = None
        self._lock: RunLock | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        self._loader = context.config_loader
        self._project = Path(context.project_path)

    @hook_impl(tryfirst=True)  # before plugins (kedro-mlflow) start anything
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        project = Path(run_params.get("project_path") or getattr(self, "_project", Path.cwd()))
        self._lock = RunLock(project)
        self._lock.acquire(" ".join(["kedro", *sys.argv[1:]]))
        try:
            if isinstance(self._loader, ProjectConfigLoader):
                check_before_run(self._loader, pipeline, catalog, project)
        except BaseException:
            self._release()
            raise

    @hook_impl
    def before_node_run(self, node, inputs: dict[str, Any]) -> dict[str, Any] | None:
        # The catalog keeps the plain values (kedro-mlflow logs them, kedro viz shows them);
        # the node gets the models they were validated into, parsed once for the whole run.
        if not isinstance(self._loader, ProjectConfigLoader):
            return None
        models = self._loader.resolved_parameters().models
        return {
            name: typed_parameter(models, name)
            for name in inputs
            if name.startswith("params:") and name.removeprefix("params:").split(".")[0] in models
        } or None

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class TrackingHooks:
    """Keeps stored artifact locations in this project (see ``rebase_artifacts``), names and
    tags the run kedro-mlflow started (``<pipeline>@<env>-<id>``: git commit and dirty flag,
    env, pipeline, versions), marks this project's runs that a killed process left
    RUNNING as FAILED, and opens the experiment in MLflow's machine-learning view."""

    def __init__(self) -> None:
        self._env: str | None = None
        self._monitor = None
        self._ui = "http://127.0.0.1:5000"

    @hook_impl(trylast=True)  # kedro-mlflow has set the tracking URI
    def after_context_created(self, context) -> None:
        self._env = getattr(context.config_loader, "run_env", None) or context.env
        ui = getattr(getattr(context, "mlflow", None), "ui", None)
        if ui is not None:
            self._ui = f"http://{ui.host}:{ui.port}"
        # Before any run is created (kedro run) or shown (kedro mlflow ui): a new run's
        # artifact location derives from its experiment's.
        rebase_artifacts(mlflow.get_tracking_uri(), Path(context.project_path))

    @hook_impl(trylast=True)  # after kedro-mlflow started the run
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        run = mlflow.active_run()
        if run is None:  # tracking is off for this pipeline
            return
        project = Path(run_params.get("project_path") or Path.cwd())
        client = mlflow.MlflowClient()
        experiment = run.info.experiment_id
        # The new run has no project tag yet, so only runs of ended processes match.
        close_abandoned_runs(client, experiment, project)
        pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
        pipelines = [name or "__default__" for name in pipelines]
        env = self._env or run_params.get("env") or "base"
        tags = run_tags(project, env, pipelines, run_params.get("runner"))
        mlflow.set_tags({**tags, "mlflow.runName": run_name(pipelines, env, run.info.run_id)})
        if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment).tags:
            client.set_experiment_tag(experiment, EXPERIMENT_KIND_TAG, "custom_model_development")
        # One monitor for the run (MLflow's own switch would start one per node, as
        # kedro-mlflow reopens the run at every node).
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(run.info.run_id, sampling_interval=5)
        self._monitor.start()

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the run
    def after_pipeline_run(self) -> None:
        self._stop_monitor()
        run = mlflow.active_run()
        if run is not None:
            logger.info("MLflow run %s: `make mlflow-ui`, then %s", run.info.run_name,
                        runs_url(run.info.experiment_id, run.info.run_id, self._ui))  # fmt: skip

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self) -> None:
        self._stop_monitor()

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
