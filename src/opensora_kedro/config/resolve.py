"""From config layers to the parameters nodes receive: merge, inherit, resolve auto, validate."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from opensora_kedro.config.errors import ConfigError, ConfigIssue
from opensora_kedro.config.hardware import Hardware, detect_hardware, has_auto, resolve_auto
from opensora_kedro.config.inheritance import resolve_inheritance
from opensora_kedro.config.merge import Sources, deep_merge, record_sources
from opensora_kedro.config.validate import source_of, validate_groups

# (origin, tree): e.g. ("conf/base/parameters_demo_data.yml", {...}) or ("--params", {...})
Layer = tuple[str, dict[str, Any]]


@dataclass
class ResolvedParameters:
    """Validated parameters and, for every key path, the file (or --params) that set it."""

    params: dict[str, Any]
    sources: Sources = field(default_factory=dict)


def _merge_layers(layers: list[Layer]) -> tuple[dict, Sources, list, list[ConfigIssue]]:
    merged: dict[str, Any] = {}
    sources: Sources = {}
    raw_layers = []
    issues = []
    for origin, tree in layers:
        if not isinstance(tree, dict):
            issues.append(ConfigIssue((), tree, "a parameters file must hold a mapping", origin))
            continue
        layer_sources: Sources = {}
        record_sources(tree, origin, layer_sources)
        raw_layers.append((origin, tree, layer_sources))
        merged = deep_merge(merged, tree, origin, sources)
    return merged, sources, raw_layers, issues


def _world_size(params: dict[str, Any]) -> int:
    launcher = params.get("launcher") if isinstance(params.get("launcher"), dict) else {}
    try:
        return int(launcher.get("nproc_per_node", 1)) * int(launcher.get("nnodes", 1))
    except (TypeError, ValueError):
        return 1  # the launcher's own validation reports the bad value


def _with_sources(issues: list[ConfigIssue], sources: Sources) -> list[ConfigIssue]:
    """Issues with their source filled in, without the copies a child inherited from a parent."""
    issues = [
        ConfigIssue(i.path, i.value, i.rule, i.source or source_of(sources, i.path)) for i in issues
    ]
    own = {(i.path, i.rule) for i in issues}
    inherited = re.compile(r"\(inherited from (\w+)\)$")
    kept = []
    for issue in issues:
        match = inherited.search(issue.source or "")
        if match and ((match.group(1), *issue.path[1:]), issue.rule) in own:
            continue  # reported once, at the parent that set it
        kept.append(issue)
    return kept


def resolve_parameters(
    layers: list[Layer], hardware: Hardware | None = None, env: str | None = None
) -> ResolvedParameters:
    """Merge ``layers`` in order, resolve stage inheritance and ``auto`` values, validate.

    Raises :class:`ConfigError` listing every issue (key path, value, rule, source).
    """
    merged, sources, raw_layers, issues = _merge_layers(layers)
    inherited, inheritance_issues = resolve_inheritance(merged, raw_layers, sources)
    issues += inheritance_issues
    if has_auto(inherited):
        inherited = resolve_auto(inherited, hardware or detect_hardware())
    validated, validation_issues = validate_groups(
        inherited, sources, {"world_size": _world_size(inherited)}
    )
    issues += validation_issues
    if issues:
        raise ConfigError(_with_sources(issues, sources), env)
    return ResolvedParameters(validated, sources)
