"""Stage inheritance: a group names the group it ``extends``; resolved after env merging."""

from __future__ import annotations

from typing import Any

from opensora_kedro.config.errors import ConfigIssue
from opensora_kedro.config.merge import Sources, deep_merge, replaces

EXTENDS = "extends"


def _chain(name: str, groups: dict[str, Any]) -> list[str] | ConfigIssue:
    """Ancestors of ``name``, root first, or the issue that breaks the chain.

    A cycle is reported at the ``extends`` of the group where it closes, with that group's
    own value; a group that only leads into a cycle says which cycle.
    """
    chain = [name]
    while True:
        parent = groups[chain[-1]].get(EXTENDS)
        if parent is None:
            return list(reversed(chain))
        if not isinstance(parent, str):
            return ConfigIssue(
                (chain[-1], EXTENDS), parent, "must be the name of a parameter group"
            )
        if parent not in groups or not isinstance(groups[parent], dict):
            return ConfigIssue(
                (chain[-1], EXTENDS), parent, "names a parameter group that does not exist"
            )
        if parent in chain:
            loop = [*chain[chain.index(parent) :], parent]
            cycle = " -> ".join(loop)
            if parent == name:
                return ConfigIssue(
                    (name, EXTENDS), groups[name][EXTENDS], f"inheritance cycle: {cycle}"
                )
            return ConfigIssue(
                (name, EXTENDS), groups[name][EXTENDS], f"leads into the inheritance cycle {cycle}"
            )
        chain.append(parent)


def resolve_inheritance(
    params: dict[str, Any], raw_layers: list[tuple[str, dict, Sources]], sources: Sources
) -> tuple[dict[str, Any], list[ConfigIssue], set[str]]:
    """Resolve every group that ``extends`` another.

    A child is rebuilt as: its root ancestor, then each descendant's *own* values
    merged in order (so ``_delete_`` in a child replaces what it inherits). The
    own values of a group are what the env layers and ``--params`` said for it,
    which ``raw_layers`` keeps as ``(origin, tree, sources)`` in merge order; an
    override on a parent therefore reaches every child that does not set the key.
    ``sources`` is updated so inherited values name the file that set them. Also returns
    the groups whose chain is broken (their values are not validated: only noise would come).
    """
    groups = {name: value for name, value in params.items() if isinstance(value, dict)}
    resolved, issues, broken = dict(params), [], set()
    for name in groups:
        if groups[name].get(EXTENDS) is None:
            continue
        chain = _chain(name, groups)
        if isinstance(chain, ConfigIssue):
            issues.append(chain)
            broken.add(name)
            continue
        group_sources: Sources = {}
        merged: dict[str, Any] = {}
        for ancestor in chain:
            inherited = (dict(merged), dict(group_sources))
            for origin, layer, _ in raw_layers:
                own = layer.get(ancestor)
                if replaces(own):
                    # This layer replaces the group's own values so far, not what it inherits.
                    merged, group_sources = dict(inherited[0]), dict(inherited[1])
                if isinstance(own, dict):
                    suffix = "" if ancestor == name else f" (inherited from {ancestor})"
                    merged = deep_merge(merged, own, origin + suffix, group_sources)
        merged[EXTENDS] = groups[name][EXTENDS]
        resolved[name] = merged
        for key in [key for key in sources if key and key[0] == name]:
            del sources[key]
        sources.update({(name, *path): origin for path, origin in group_sources.items()})
    return resolved, issues, broken
