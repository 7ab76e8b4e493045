"""The project's config loader: Kedro's OmegaConfigLoader with resolved, validated parameters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from opensora_kedro.config.resolve import Layer, ResolvedParameters, resolve_parameters


class ProjectConfigLoader(OmegaConfigLoader):
    """``parameters`` come back merged across envs and ``--params``, with stage inheritance
    and ``auto`` values resolved and every group validated; other config types are Kedro's.

    Parameters are merged here rather than by Kedro so that ``_delete_`` also works across
    envs (an env can replace a ``bucket_config`` instead of adding to it) and so that every
    value remembers the file it came from for error messages and ``kedro config explain``.
    Each file is resolved on its own: interpolations must not reach into other files.
    """

    def __getitem__(self, key: str) -> dict[str, Any]:
        if key == "parameters" and key not in self:
            return self.resolved_parameters().params
        return super().__getitem__(key)

    @property
    def run_env(self) -> str:
        """The env layered over base for this run."""
        return self.env or self.default_run_env

    def parameter_layers(self) -> list[Layer]:
        """Every parameters file of base then the run env, then ``--params``, in merge order."""
        self._register_runtime_params_resolver()
        base_configs, env_configs, *_ = self._read_raw_config("parameters")
        root = Path(self.conf_source).resolve().parent
        layers: list[Layer] = []
        for configs in (base_configs, env_configs):
            for path in sorted(configs):
                tree = OmegaConf.to_container(configs[path], resolve=True)
                tree = {k: v for k, v in tree.items() if not str(k).startswith("_")}
                layers.append((os.path.relpath(Path(path).resolve(), root), tree))
        if self.runtime_params:
            runtime = self.runtime_params
            if not isinstance(runtime, dict):
                runtime = OmegaConf.to_container(runtime, resolve=True)
            layers.append(("--params", runtime))
        return layers

    def resolved_parameters(self) -> ResolvedParameters:
        """Resolve and validate the parameters (once per loader); raises ConfigError listing
        every issue."""
        if getattr(self, "_resolved", None) is None:
            self._resolved = resolve_parameters(self.parameter_layers(), env=self.run_env)
        return self._resolved
