"""Project settings: how Kedro loads configuration and which hooks run."""

import logging
import os
import sys
from pathlib import Path
from typing import Any

from kedro.framework.context import KedroContext
from kedro.logging import RichHandler
from rich.console import Console

from opensora_kedro.config.loader import ProjectConfigLoader
from opensora_kedro.console import quiet_known_warnings
from opensora_kedro.hooks import ProjectHooks, TrackingHooks

# Telemetry would try the network, which a cluster node or CI machine may not have.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
# kedro-mlflow starts `mlflow` (its UI) from PATH: this environment's, activated or not.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])


def _console() -> None:
    """conf/logging.yml writes plain, unwrapped lines to stderr, so that stdout carries only
    data (``kedro config show > params.yml``) and a log file holds one line per record (Rich
    wraps at 80 columns off a terminal); on a terminal Kedro's Rich handler replaces it here
    (Kedro refuses project handler classes in logging.yml)."""
    quiet_known_warnings()
    # MLflow sets its logger's level when imported, over conf/logging.yml: database tables
    # created, a GPU monitor skipped on a CPU, the system-metrics monitor started / stopped.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if not sys.stderr.isatty():
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
            root.removeHandler(handler)
            rich = RichHandler(console=Console(stderr=True), rich_tracebacks=True)
            rich.setLevel(handler.level)
            root.addHandler(rich)


_console()


class ProjectContext(KedroContext):
    """Kedro's context, its parameters validated once, by the project's config loader.

    Kedro 1.7 would validate every pydantic-annotated ``params:`` input of the registered
    pipelines a second time and put the models into the catalog (failing where a group and a
    key inside it are both inputs). Here the catalog keeps the plain values, which
    kedro-mlflow logs key by key and kedro viz shows, and the project hooks hand each node the
    typed model (``ProjectHooks.before_node_run``).
    """

    @property
    def params(self) -> dict[str, Any]:
        """The resolved parameters (envs, ``--params``, inheritance and ``auto`` applied)."""
        return self.config_loader["parameters"]


# Parameters come out merged, inherited (stages), hardware-resolved and validated, once.
CONFIG_LOADER_CLASS = ProjectConfigLoader
CONTEXT_CLASS = ProjectContext
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An env file states only the keys it changes, and `--params a.b=x` keeps the
    # siblings of `b` (Kedro's default merge replaces whole top-level keys).
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
}
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)
# One run per project at a time; inputs, parameter-named files and the machine are checked
# before any node (or launched worker) starts.
HOOKS = (ProjectHooks(), TrackingHooks())
