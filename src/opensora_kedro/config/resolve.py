"""From config layers to the parameters nodes receive: merge, inherit, resolve auto, validate."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from opensora_kedro.config.errors import PARAMS_ORIGIN, ConfigError, ConfigIssue
from opensora_kedro.config.hardware import (
    AUTO_ON_WORKERS,
    Hardware,
    auto_keys,
    detect_hardware,
    resolve_auto,
)
from opensora_kedro.config.inheritance import resolve_inheritance
from opensora_kedro.config.merge import (
    Sources,
    deep_merge,
    delete_marker_issues,
    record_sources,
)
from opensora_kedro.config.schemas import schema_for
from opensora_kedro.config.validate import source_of, validate_groups

logger = logging.getLogger(__name__)

# (origin, tree): e.g. ("conf/base/parameters_demo_data.yml", {...}) or ("--params", {...})
Layer = tuple[str, dict[str, Any]]
INHERITED = re.compile(r" \(inherited from (\w+)\)$")


@dataclass
class ResolvedParameters:
    """Validated parameters and, for every key path, the file (or --params) that set it."""

    params: dict[str, Any]
    sources: Sources = field(default_factory=dict)
    models: dict[str, BaseModel] = field(default_factory=dict)


def _merge_layers(layers: list[Layer]) -> tuple[dict, Sources, list, list[ConfigIssue]]:
    merged: dict[str, Any] = {}
    sources: Sources = {}
    raw_layers = []
    issues = []
    for origin, tree in layers:
        if not isinstance(tree, dict):
            issues.append(ConfigIssue((), tree, "a parameters file must hold a mapping", origin))
            continue
        issues += [
            ConfigIssue(path, value, "_delete_ must be true or false", origin)
            for path, value in delete_marker_issues(tree)
        ]
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


def _layer_of(origin: str, order: list[str]) -> int:
    base = INHERITED.sub("", origin)
    return order.index(base) if base in order else -1


def issue_source(sources: Sources, path: tuple, order: list[str]) -> str | None:
    """The origin to name for an issue at ``path``: of the key itself, or, for a mapping,
    of the latest layer that set anything under it (a --params key inside a dict from a
    file is reported as ``--params``)."""
    own = source_of(sources, path)
    under = [origin for key, origin in sources.items() if key[: len(path)] == path]
    if not under:
        return own
    latest = max(under, key=lambda origin: _layer_of(origin, order))
    if own is None or _layer_of(latest, order) > _layer_of(own, order):
        return latest
    return own


def _with_sources(issues: list[ConfigIssue], sources: Sources, order: list[str]):
    """Issues with their source filled in, once each, without the copies a child inherited
    from a parent."""
    filled, seen = [], set()
    for i in issues:
        issue = ConfigIssue(
            i.path, i.value, i.rule, i.source or issue_source(sources, i.path, order)
        )
        if (issue.path, issue.rule, repr(issue.value)) not in seen:
            seen.add((issue.path, issue.rule, repr(issue.value)))
            filled.append(issue)
    own = {(i.path, i.rule) for i in filled}
    kept = []
    for issue in filled:
        match = INHERITED.search(issue.source or "")
        if match and ((match.group(1), *issue.path[1:]), issue.rule) in own:
            continue  # reported once, at the parent that set it
        kept.append(issue)
    return kept


def _explicit_choices(params: dict[str, Any], sources: Sources) -> list[ConfigIssue]:
    """Alternatives of a schema (``ALTERNATIVES``, e.g. prompt / prompt_csv) set together:
    the one given with --params wins and the other is cleared (logged); set together at the
    same level, they are an error. Updates ``params`` in place."""
    issues = []
    for group, value in params.items():
        schema = schema_for(group)
        if not isinstance(value, dict) or schema is None:
            continue
        for first, second in getattr(schema, "ALTERNATIVES", ()):
            if value.get(first) is None or value.get(second) is None:
                continue
            origins = {name: source_of(sources, (group, name)) or "" for name in (first, second)}
            explicit = [name for name in (first, second) if origins[name] == PARAMS_ORIGIN]
            if len(explicit) == 1:
                chosen = explicit[0]
                dropped = second if chosen == first else first
                logger.info("%s.%s given with --params replaces %s.%s=%r set in %s", group,
                            chosen, group, dropped, value[dropped], origins[dropped])  # fmt: skip
                params[group] = {**value, dropped: None}
                sources[(group, dropped)] = f"{PARAMS_ORIGIN} (cleared by {group}.{chosen})"
                continue
            issues.append(ConfigIssue(
                (group, second), value[second],
                f"{first} ({origins[first]}) and {second} ({origins[second]}) are both set: "
                f"set only one",
            ))  # fmt: skip
    return issues


def _inert_issues(models: dict[str, BaseModel], sources: Sources) -> list[ConfigIssue]:
    """Values the code would ignore because of another setting: an error when given with
    --params (the user asked for something that would not happen), logged otherwise."""
    issues = []
    for group, model in models.items():
        for path, why in model.all_inert_fields():
            key = (group, *map(str, path))
            origin = source_of(sources, key) or ""
            if origin == PARAMS_ORIGIN:
                value = _get(model, path)
                issues.append(ConfigIssue(key, value, f"has no effect: {why}", origin))
            else:
                logger.debug("%s has no effect (%s) [%s]", ".".join(key), why, origin)
    return issues


def _get(model: Any, path: tuple) -> Any:
    for key in path:
        model = model[key] if isinstance(model, dict) else getattr(model, key)
    return model


def resolve_parameters(
    layers: list[Layer], hardware: Hardware | None = None, env: str | None = None
) -> ResolvedParameters:
    """Merge ``layers`` in order, resolve stage inheritance and ``auto`` values, validate.

    Raises :class:`ConfigError` listing every issue (key path, value, rule, source).
    """
    merged, sources, raw_layers, issues = _merge_layers(layers)
    inherited, inheritance_issues, broken = resolve_inheritance(merged, raw_layers, sources)
    issues += inheritance_issues
    issues += _explicit_choices(inherited, sources)
    autos = auto_keys(inherited)
    if autos:
        inherited = resolve_auto(inherited, hardware or detect_hardware())
    validated, models, validation_issues = validate_groups(
        inherited, sources, {"world_size": _world_size(inherited)}, skip=broken
    )
    issues += validation_issues + _inert_issues(models, sources)
    if issues:
        order = [origin for origin, _ in layers]
        raise ConfigError(_with_sources(issues, sources, order), env)
    for group, keys in autos.items():
        if getattr(schema_for(group), "RESOLVED_ON_WORKERS", False) and group in validated:
            validated[group][AUTO_ON_WORKERS] = keys
            models[group] = models[group].model_copy(update={AUTO_ON_WORKERS: keys})
    return ResolvedParameters(validated, sources, models)
