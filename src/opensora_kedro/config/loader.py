"""The project's config loader: Kedro's OmegaConfigLoader with resolved, validated parameters."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from opensora_kedro.config.errors import ConfigFileError, UnknownEnvError
from opensora_kedro.config.resolve import Layer, ResolvedParameters, resolve_parameters


def known_envs(conf_source: str | os.PathLike) -> list[str]:
    """The env folders under ``conf_source``."""
    root = Path(conf_source)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def yaml_problem(path: Path) -> ConfigFileError | None:
    """The first YAML problem of ``path`` (syntax, duplicate key...) with its 1-based line."""
    try:
        OmegaConf.load(path)  # the same parser Kedro reads the file with
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        problem = " ".join(part for part in (error.context, error.problem) if part)
        if error.context_mark is not None and error.context_mark is not mark:
            problem += f" (the mapping starts at line {error.context_mark.line + 1})"
        return ConfigFileError(str(path), mark.line + 1, mark.column + 1, problem)
    except yaml.YAMLError as error:
        return ConfigFileError(str(path), None, None, str(error))
    return None


class ProjectConfigLoader(OmegaConfigLoader):
    """``parameters`` come back merged across envs and ``--params``, with stage inheritance
    and ``auto`` values resolved and every group validated; other config types are Kedro's.

    Parameters are merged here rather than by Kedro so that ``_delete_`` also works across
    envs (an env can replace a ``bucket_config`` instead of adding to it) and so that every
    value remembers the file it came from for error messages and ``kedro config explain``.
    Each file is resolved on its own: interpolations must not reach into other files.
    """

    def __init__(self, conf_source: str | os.PathLike, env: str | None = None, **kwargs) -> None:
        super().__init__(conf_source=conf_source, env=env, **kwargs)
        envs = known_envs(self.conf_source)
        if env and Path(self.conf_source).is_dir() and env not in envs:
            raise UnknownEnvError(env, str(self.conf_source), envs)

    def _read_dir_configs(
        self, conf_path: str, patterns: Iterable[str], key: str, *args, **kwargs
    ) -> dict:
        """Kedro's reading of a config folder; a YAML error names the file and its line."""
        try:
            return super()._read_dir_configs(conf_path, patterns, key, *args, **kwargs)
        except yaml.YAMLError as error:
            for path in sorted({p for pattern in patterns for p in Path(conf_path).glob(pattern)}):
                if path.is_file() and path.suffix in (".yml", ".yaml", ".json"):
                    problem = yaml_problem(path)
                    if problem is not None:
                        raise problem from error
            raise

    def __getitem__(self, key: str) -> dict[str, Any]:
        if key == "parameters" and key not in self:
            return self.resolved_parameters().params
        config = super().__getitem__(key)
        if key == "catalog":
            # Kedro makes `filepath` / `path` absolute against the project; our tables' `root`
            # too, so a notebook (cwd notebooks/) finds the same folders as `kedro run`.
            project = Path(self.conf_source).resolve().parent
            config = {name: _absolute_root(entry, project) for name, entry in config.items()}
        return config

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


def _absolute_root(entry: Any, project: Path) -> Any:
    """A catalog entry with a relative ``root`` / ``shots_root`` made absolute against
    ``project``."""
    if not isinstance(entry, dict):
        return entry
    absolute = {
        key: (project / value).as_posix()
        for key in ("root", "shots_root")
        if isinstance(value := entry.get(key), str)
        and "://" not in value
        and not Path(value).is_absolute()
    }
    return {**entry, **absolute}
