"""The schemas as a whole: every rule they define is applied, every key they accept is used."""

from __future__ import annotations

import inspect
import re
import typing

import pytest
from pydantic import BaseModel

from opensora_kedro.config.resolve import resolve_parameters
from opensora_kedro.config.schemas import GROUPS, PREFIXES
from opensora_kedro.params import Params
from tests.config.conftest import CPU, project_layers
from tests.conftest import PROJECT_ROOT

# Methods a schema may define for itself; resolution must reach every definition.
RULE_METHODS = ("cross_checks", "inert_fields")


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def schema_classes() -> list[type[Params]]:
    """Every schema reachable from the group registry (nested models included)."""
    found: list[type[Params]] = []

    def walk(model: type[Params]) -> None:
        if model in found:
            return
        found.append(model)
        for field in model.model_fields.values():
            for nested in _models_in(field.annotation):
                walk(nested)

    for schema in [*GROUPS.values(), *PREFIXES.values()]:
        walk(schema)
    return found


def test_the_walk_finds_nested_schemas():
    names = {model.__name__ for model in schema_classes()}
    assert {"FilterParams", "TinyEncoderParams", "MMDiTParams", "PluginConfigParams"} <= names


@pytest.mark.parametrize("method", RULE_METHODS)
def test_every_rule_a_schema_defines_is_applied(monkeypatch, method):
    defining = [model for model in schema_classes() if method in vars(model)]
    assert defining, method
    called: set[str] = set()

    def recording(model, original):
        def wrapper(self, *args, **kwargs):
            called.add(model.__name__)
            return original(self, *args, **kwargs)

        return wrapper

    for model in defining:
        monkeypatch.setattr(model, method, recording(model, vars(model)[method]))
    for env in ("base", "local", "cluster"):
        resolve_parameters(project_layers(env), CPU)
    assert called == {model.__name__ for model in defining}


def test_a_nested_rule_is_reported_with_its_full_path():
    override = {"data_processing": {"filter": {"min_frames": 50, "max_frames": 10}}}
    with pytest.raises(Exception) as error:
        resolve_parameters(project_layers("local", override), CPU)
    assert "data_processing.filter.min_frames = 50: must not exceed max_frames (10)" in str(
        error.value
    )


def _code_outside_schemas() -> str:
    package = PROJECT_ROOT / "src" / "opensora_kedro"
    return "\n".join(
        path.read_text()
        for path in package.rglob("*.py")
        if "schemas" not in path.relative_to(package).parts and path.name != "params.py"
    )


def test_every_validated_key_is_read_by_some_code():
    """A key the schemas accept but no code reads would be silently ignored: each field name
    must appear outside the schemas as a key (``["name"]``, ``.get("name"``), an attribute
    (``.name``) or a keyword (``name=``). Name-level, so a field shared by several schemas
    is covered once any of them is read."""
    code = _code_outside_schemas()
    # A schema property the code reads (``log_interval``) reads its fields for it.
    code += "\n".join(
        inspect.getsource(member.fget)
        for model in schema_classes()
        for klass in model.__mro__
        for name, member in vars(klass).items()
        if isinstance(member, property) and re.search(rf"\.{name}\b", code)
    )
    unread = [
        f"{model.__name__}.{name}"
        for model in schema_classes()
        for name in model.model_fields
        if not re.search(rf"""(["']{name}["']|\.{name}\b|\b{name}=)""", code)
    ]
    assert unread == []
