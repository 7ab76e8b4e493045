"""Project settings: how Kedro loads configuration and which hooks run."""

import os
import warnings

from opensora_kedro.config.loader import ProjectConfigLoader
from opensora_kedro.hooks import ProjectHooks

# Telemetry would try the network, which a cluster node or CI machine may not have.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
# Kedro 1.7 still calls OmegaConf's deprecated resolver API on every run; not ours to fix.
warnings.filterwarnings("ignore", message=".*register_new_resolver.*", category=UserWarning)

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
HOOKS = (ProjectHooks(),)
