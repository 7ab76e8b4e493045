"""Looking at resolved parameters: differences between two groups, and what one key means."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from opensora_kedro.config.merge import Path, Sources, flatten, get_path
from opensora_kedro.config.schemas import schema_for
from opensora_kedro.config.validate import _model_in, source_of


def plain(tree: Any) -> Any:
    """Tuples as lists, recursively, and numeric keys (frame counts) in numeric order: what
    YAML and JSON can show, as a person reads it."""
    if isinstance(tree, dict):
        keys = list(tree)
        if keys and all(isinstance(key, int) for key in keys):
            keys.sort()
        return {key: plain(tree[key]) for key in keys}
    if isinstance(tree, list | tuple):
        return [plain(value) for value in tree]
    return tree


def diff_trees(old: dict, new: dict) -> list[str]:
    """Key-by-key differences: ``+ key: value``, ``- key: value``, ``~ key: old -> new``."""
    before, after = flatten(plain(old)), flatten(plain(new))
    lines = []
    for path in sorted(set(before) | set(after), key=_natural):
        key = ".".join(path)
        if path not in after:
            lines.append(f"- {key}: {before[path]!r}")
        elif path not in before:
            lines.append(f"+ {key}: {after[path]!r}")
        elif before[path] != after[path]:
            lines.append(f"~ {key}: {before[path]!r} -> {after[path]!r}")
    return lines


def _natural(path: Path) -> tuple:
    """Key paths in reading order: numbers by value (5 before 13 before 101), then names."""
    return tuple((0, int(part), "") if str(part).isdigit() else (1, 0, str(part)) for part in path)


@dataclass(frozen=True)
class KeyExplanation:
    """What ``kedro config explain`` prints about one key."""

    key: str
    description: str
    type: str
    default: Any
    value: Any
    source: str | None


def _field(schema: type[BaseModel], path: Path):
    model, field = schema, None
    for index, key in enumerate(path):
        field = model.model_fields.get(key) if model else None
        if field is None:
            return None
        if index < len(path) - 1:
            model = _model_in(field.annotation)
    return field


def explain_key(key: str, params: dict[str, Any], sources: Sources) -> KeyExplanation:
    """Description, type, default, current value and source of a dotted parameter key."""
    path = tuple(key.split("."))
    schema = schema_for(path[0])
    if schema is None:
        raise KeyError(f"unknown parameter group '{path[0]}'")
    field = _field(schema, path[1:]) if len(path) > 1 else None
    value = get_path(params, path)
    default = None
    if field is not None and field.default is not PydanticUndefined:
        default = field.default
    annotation = field.annotation if field else schema
    return KeyExplanation(
        key=key,
        description=(field.description if field else schema.__doc__) or "",
        type=getattr(annotation, "__name__", None) or str(annotation).replace("typing.", ""),
        default=plain(default),
        value=plain(value),
        source=source_of(sources, path),
    )
