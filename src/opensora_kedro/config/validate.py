"""Validation against the schemas: every issue, with its key path, value, rule and source."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from opensora_kedro.config.errors import ConfigIssue
from opensora_kedro.config.merge import Path, Sources
from opensora_kedro.config.schemas import GROUPS, schema_for
from opensora_kedro.params import Params


def source_of(sources: Sources, path: Path) -> str | None:
    """The origin of ``path``, or of its nearest ancestor that has one."""
    for end in range(len(path), -1, -1):
        if path[:end] in sources:
            return sources[path[:end]]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (through Optional / Annotated), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        found = (
            _model_in(arg) if typing.get_origin(arg) in (typing.Union, types.UnionType) else None
        )
        if found:
            return found
    return None


def fields_at(schema: type[BaseModel], path: Path) -> list[str]:
    """Field names of the model reached by following ``path`` from ``schema`` ([] if none)."""
    model: type[BaseModel] | None = schema
    for key in path:
        field = model.model_fields.get(key) if model else None
        model = _model_in(field.annotation) if field else None
        if model is None:
            return []
    return list(model.model_fields) if model else []


def suggest(unknown: str, candidates: list[str]) -> str | None:
    """The candidate the user probably meant: a close spelling, or an abbreviation either way."""
    close = difflib.get_close_matches(unknown, [c for c in candidates if c != unknown], n=1)
    if close:
        return close[0]

    def initials(name: str) -> str:
        return "".join(word[0] for word in name.split("_") if word)

    for candidate in candidates:
        if unknown == initials(candidate) or initials(unknown) == candidate:
            return candidate
    return None


def _clean_loc(loc: tuple, tree: Any) -> Path:
    """The key path of a pydantic error location, without union-branch tags."""
    path: list[str] = []
    for item in loc:
        if isinstance(tree, dict) and (item in tree or str(item) in map(str, tree)):
            key = item if item in tree else next(k for k in tree if str(k) == str(item))
            path.append(str(key))
            tree = tree[key]
        elif isinstance(tree, list | tuple) and isinstance(item, int) and item < len(tree):
            path.append(str(item))
            tree = tree[item]
    return tuple(path)


def _schema_issues(group: str, schema: type[BaseModel], value: dict, error: ValidationError):
    rules: dict[Path, tuple[Any, list[str]]] = {}
    for detail in error.errors():
        path = _clean_loc(detail["loc"], value)
        if detail["type"] == "extra_forbidden":
            unknown = str(detail["loc"][-1])
            path = (*path, unknown) if not path or path[-1] != unknown else path
            close = suggest(unknown, fields_at(schema, path[:-1]))
            rule = "unknown key" + (f"; did you mean '{close}'?" if close else "")
        elif detail["type"] == "missing" and isinstance(detail["loc"][-1], int):
            rule = "too few items"
        elif detail["type"] == "missing":
            path, rule = (*path, str(detail["loc"][-1])), "required key is missing"
        else:
            rule = detail["msg"]
        entry = rules.setdefault(path, (detail.get("input"), []))
        if rule not in entry[1]:
            entry[1].append(rule)
    return [
        ConfigIssue((group, *path), bad, " or ".join(messages))
        for path, (bad, messages) in rules.items()
    ]


def validate_groups(
    params: dict[str, Any],
    sources: Sources,
    context: dict[str, Any],
    skip: set[str] | frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, Params], list[ConfigIssue]]:
    """Validate every top-level group but those in ``skip``; returns the normalised
    parameters, the validated models and all issues."""
    validated, models, issues = {}, {}, []
    for group, value in params.items():
        if group in skip:
            continue
        schema = schema_for(group)
        close = suggest(group, list(GROUPS) + list(params))
        hint = f"; did you mean '{close}'?" if close else ""
        if schema is None:
            issues.append(ConfigIssue((group,), "...", f"unknown parameter group{hint}"))
            continue
        if not isinstance(value, dict):
            issues.append(ConfigIssue((group,), value, "must be a mapping of parameters"))
            continue
        try:
            model = schema.model_validate(value)
        except ValidationError as error:
            group_issues = _schema_issues(group, schema, value, error)
            missing = [
                i.path[1]
                for i in group_issues
                if i.rule.startswith("required") and len(i.path) == 2
            ]
            if len(missing) > 2 and group not in GROUPS:
                # A new stage or preset that inherits nothing: most likely a misspelt name.
                rule = f"unknown or incomplete parameter group (missing {', '.join(missing)}){hint}"
                group_issues = [ConfigIssue((group,), "...", rule)]
            issues += group_issues
            continue
        issues += [
            ConfigIssue((group, *map(str, path)), bad, rule)
            for path, bad, rule in model.all_cross_checks(context)
        ]
        validated[group] = model.model_dump(mode="python")
        models[group] = model
    return validated, models, issues
