"""Project settings: how Kedro loads configuration and which hooks run."""

import os

from kedro.config import OmegaConfigLoader

# Telemetry would try the network, which a cluster node or CI machine may not have.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An env file states only the keys it changes, and `--params a.b=x` keeps the
    # siblings of `b` (Kedro's default merge replaces whole top-level keys).
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
}
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)
