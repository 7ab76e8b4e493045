"""Deep merging of parameter trees with ``_delete_``, tracking where every value came from."""

from __future__ import annotations

import copy
from typing import Any

# Inside a dict, ``_delete_: true`` makes that dict replace the one it overrides
# instead of merging into it (Open-Sora's mmengine convention).
DELETE_MARKER = "_delete_"

Path = tuple[str, ...]
Sources = dict[Path, str]


def replaces(value: Any) -> bool:
    """Whether ``value`` is a dict marked to replace what it overrides (``_delete_: true``).

    Only the boolean ``true`` counts; :func:`delete_marker_issues` reports any other value.
    """
    return isinstance(value, dict) and value.get(DELETE_MARKER) is True


def delete_marker_issues(tree: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    """``(path, value)`` of every ``_delete_`` in ``tree`` that is not a YAML boolean."""
    found: list[tuple[Path, Any]] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == DELETE_MARKER and not isinstance(value, bool):
                found.append(((*path, DELETE_MARKER), value))
            else:
                found += delete_marker_issues(value, (*path, str(key)))
    return found


def strip_markers(tree: Any) -> Any:
    """A copy of ``tree`` without ``_delete_`` markers."""
    if isinstance(tree, dict):
        return {key: strip_markers(value) for key, value in tree.items() if key != DELETE_MARKER}
    return copy.deepcopy(tree)


def record_sources(tree: Any, origin: str, sources: Sources, path: Path = ()) -> None:
    """Record ``origin`` as the source of every value under ``path`` (dicts included)."""
    sources[path] = origin
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key != DELETE_MARKER:
                record_sources(value, origin, sources, (*path, str(key)))


def _drop_sources_under(sources: Sources, path: Path) -> None:
    for key in [key for key in sources if key[: len(path)] == path and len(key) > len(path)]:
        del sources[key]


def deep_merge(base: dict, override: dict, origin: str, sources: Sources, path: Path = ()) -> dict:
    """Merge ``override`` into a copy of ``base``; dicts merge key by key, anything else replaces.

    A dict in ``override`` that holds ``_delete_: true`` (the boolean) replaces the dict in
    ``base`` wholesale. ``sources`` maps each key path to the ``origin`` that set it
    and is updated in place.
    """
    merged = dict(base)
    for key, value in override.items():
        if key == DELETE_MARKER:
            continue
        child = (*path, str(key))
        replace = replaces(value)
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not replace:
            merged[key] = deep_merge(merged[key], value, origin, sources, child)
            sources.setdefault(child, origin)
        else:
            _drop_sources_under(sources, child)
            merged[key] = strip_markers(value)
            record_sources(value, origin, sources, child)
    return merged


def get_path(tree: Any, path: Path) -> Any:
    """The value at ``path`` in nested dicts; raises KeyError naming the missing part."""
    for index, key in enumerate(path):
        if not isinstance(tree, dict) or key not in tree:
            raise KeyError(".".join(path[: index + 1]))
        tree = tree[key]
    return tree


def flatten(tree: Any, path: Path = ()) -> dict[Path, Any]:
    """Leaf values of nested dicts keyed by their path (empty dicts count as leaves)."""
    if isinstance(tree, dict) and tree:
        flat: dict[Path, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, (*path, str(key))))
        return flat
    return {path: tree}
