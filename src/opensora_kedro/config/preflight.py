"""Checks before a run starts any node or worker: the inputs exist and the machine fits.

Parameter validation says whether a configuration is consistent; these checks say whether
*this* machine can run it *now*: every file or folder the run reads (catalog inputs no node
of the run produces, weights and encoders named by parameters) exists, and the launcher
asks for hardware the machine has. Kedro-free: the catalog arrives as
:class:`DatasetInput` records (see ``hooks.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensora_kedro.config.errors import ConfigIssue
from opensora_kedro.config.hardware import Hardware
from opensora_kedro.config.merge import Sources
from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.config.schemas.vae import VaeTrainingParams
from opensora_kedro.config.validate import source_of
from opensora_kedro.files import resolve_path
from opensora_kedro.params import Params
from opensora_kedro.runtime.params import plugin_needs_cuda

TRAINING_SCHEMAS = (DiffusionStageParams, VaeTrainingParams)


@dataclass(frozen=True)
class DatasetInput:
    """A catalog dataset the run loads without producing it."""

    name: str
    location: str | None  # its file or folder, if it has one
    exists: bool
    loads_when_missing: bool = False  # an optional input (a previous output, a run folder)
    problem: str | None = None  # what the dataset's own check found wrong with its content


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _produced(path: Path, produced: Iterable[Path]) -> bool:
    return any(_inside(path, out) or _inside(out, path) for out in produced)


def dataset_issues(inputs: Iterable[DatasetInput], produced: Iterable[Path]) -> list[ConfigIssue]:
    """Catalog inputs whose file or folder is missing (and that no node of the run writes)."""
    produced = [p.resolve() for p in produced]
    issues = [
        ConfigIssue(("catalog", item.name), item.location,
                    "no such file or folder: the run loads it and no node of the run writes it")
        for item in inputs
        if item.location and not item.exists and not item.loads_when_missing
        and not _produced(Path(item.location).resolve(), produced)
    ]  # fmt: skip
    return issues + [
        ConfigIssue(("catalog", item.name), item.location, item.problem)
        for item in inputs
        if item.problem
    ]


def parameter_path_issues(
    models: dict[str, Params],
    groups: Iterable[str],
    sources: Sources,
    produced: Iterable[Path] = (),
    base_dir: Path | None = None,
) -> list[ConfigIssue]:
    """Files or folders that the ``groups`` name as inputs (weights, encoders, prompt CSVs,
    hostfiles) and that do not exist; paths a node of the run writes are fine."""
    produced = [p.resolve() for p in produced]
    issues = []
    for group in groups:
        if group not in models:
            continue
        for path, value in models[group].all_input_paths():
            file = resolve_path(value, base_dir).resolve()
            if file.exists() or _produced(file, produced):
                continue
            key = (group, *map(str, path))
            issues.append(ConfigIssue(key, value, f"no such file or folder ({file})",
                                      source_of(sources, key)))  # fmt: skip
    return issues


def _cuda_needs(models: dict[str, Params], groups: Iterable[str]) -> list[tuple[tuple, Any, str]]:
    """``(key, value, why)`` of each training group's plugin that needs CUDA GPUs."""
    needs = []
    for group in groups:
        model = models.get(group)
        if not isinstance(model, TRAINING_SCHEMAS):
            continue
        if plugin_needs_cuda(model.plugin, model.plugin_config):
            needs.append(((group, "plugin"), model.plugin,
                          "ZeRO and model parallelism run only on CUDA GPUs"))  # fmt: skip
    return needs


def machine_issues(
    models: dict[str, Params], groups: Iterable[str], hardware: Hardware, sources: Sources
) -> list[ConfigIssue]:
    """The launcher and the training groups of the run against this machine's GPUs."""
    groups = list(groups)
    if "launcher" not in groups or "launcher" not in models:
        return []
    launcher = models["launcher"].model_dump()
    issues = []
    backend = launcher.get("backend", "auto")
    gpus = hardware.gpu_count
    if backend == "nccl" and not gpus:
        issues.append(ConfigIssue(("launcher", "backend"), backend,
                                  "nccl needs CUDA GPUs and this machine has none"))  # fmt: skip
    if backend != "gloo" and not gpus:
        issues += [ConfigIssue(key, value, f"{why}; this machine has none")
                   for key, value, why in _cuda_needs(models, groups)]  # fmt: skip
    workers = launcher.get("nproc_per_node", 1)
    if launcher.get("type") == "colossalai" and backend != "gloo" and workers > gpus:
        have = f"{gpus} GPU(s)" if gpus else "no GPU"
        issues.append(ConfigIssue(
            ("launcher", "nproc_per_node"), workers,
            f"starts one worker per GPU and this machine has {have}; lower it, or set "
            "launcher.backend gloo to run the workers on the CPU",
        ))  # fmt: skip
    return [ConfigIssue(i.path, i.value, i.rule, source_of(sources, i.path)) for i in issues]
