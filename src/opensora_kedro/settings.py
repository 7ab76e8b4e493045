"""Project settings: how Kedro loads configuration and which hooks run."""

import os
import sys
from pathlib import Path

from opensora_kedro.config.loader import ProjectConfigLoader
from opensora_kedro.console import setup_console
from opensora_kedro.hooks import ProjectHooks, TrackingHooks

# Telemetry would try the network, which a cluster node or CI machine may not have.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
# kedro-mlflow starts `mlflow` (its UI) from PATH: this environment's, activated or not.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])
setup_console()  # known third-party warnings quiet; Rich where a person reads the log

# Parameters come out merged, inherited (stages), hardware-resolved and validated.
CONFIG_LOADER_CLASS = ProjectConfigLoader
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
