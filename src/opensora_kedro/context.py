"""The project's Kedro context: parameters exactly as the project's config loader validated them."""

from __future__ import annotations

from typing import Any

from kedro.framework.context import KedroContext


class ProjectContext(KedroContext):
    """Kedro's context, its parameters validated once, by the project's config loader.

    Kedro 1.7 would validate every pydantic-annotated ``params:`` input of the registered
    pipelines a second time and put the models into the catalog (failing where a group and a
    key inside it are both inputs). Here the catalog keeps the plain values, which
    kedro-mlflow logs key by key and kedro viz shows, and the project hooks hand each node the
    typed model (``ProjectHooks.before_node_run``).
    """

    @property
    def params(self) -> dict[str, Any]:
        """The resolved parameters (envs, ``--params``, inheritance and ``auto`` applied)."""
        return self.config_loader["parameters"]
