"""Project pipelines: the diffusion stages from the stage table, the rest from their folders."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, MutableMapping
from functools import partial

from kedro.pipeline import Pipeline

import opensora_kedro.pipelines

# The embedded default, in order; later stages join as they land.
DEFAULT_CHAIN = (
    "demo_data",
    "data_processing",
    "text_embedding",
    "vae_training",
    "diffusion_stage1",
    "evaluation",
)


# Tags per pipeline, for `kedro run --tags` and kedro viz's filter: what kind of work, and
# where it wants to run. A diffusion stage not named here gets STAGE_TAGS.
TAGS = {
    "demo_data": ("data",),
    "data_processing": ("data",),
    "text_embedding": ("data", "gpu"),
    "vae_training": ("training", "gpu"),
    "evaluation": ("evaluation", "gpu"),
    "inference": ("inference", "gpu"),
}
STAGE_TAGS = ("training", "gpu")

Builder = Callable[[], Pipeline]


class LazyPipelines(MutableMapping[str, Pipeline]):
    """Pipelines by name, each built (its modules imported) on its first access.

    Kedro calls ``register_pipelines()`` whole and then reads only the pipelines a command
    names, so building them here, up front, would import every pipeline's code (torch and
    the models for the training ones) for a ``kedro run --pipeline=demo_data``.
    """

    def __init__(self, builders: dict[str, Builder], more: Callable[[], dict[str, Builder]]):
        """``builders`` by name; ``more()`` gives the rest, asked only when a name is not in
        ``builders`` or all names are wanted (it may import what ``builders`` avoids)."""
        self._builders = dict(builders)
        self._more: Callable[[], dict[str, Builder]] | None = more
        self._built: dict[str, Pipeline] = {}

    def _all_builders(self) -> dict[str, Builder]:
        """Every builder, ``more()``'s included."""
        if self._more is not None:
            more, self._more = self._more(), None
            self._builders = {**more, **self._builders}
        return self._builders

    def __getitem__(self, name: str) -> Pipeline:
        if name not in self._built:
            builders = self._builders if name in self._builders else self._all_builders()
            build = builders[name]  # a KeyError here is Kedro's "Failed to find the pipeline"
            try:
                self._built[name] = build()
            except KeyError as error:
                # Not an unknown pipeline: Kedro would report this one as one.
                raise RuntimeError(f"building the pipeline '{name}' failed") from error
        return self._built[name]

    def __setitem__(self, name: str, pipeline: Pipeline) -> None:
        self._all_builders()[name] = lambda: pipeline
        self._built[name] = pipeline

    def __delitem__(self, name: str) -> None:
        del self._all_builders()[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._all_builders()))

    def __len__(self) -> int:
        return len(self._all_builders())


def register_pipelines() -> LazyPipelines:
    """Every pipeline: one per folder under ``pipelines/``, one per diffusion stage in
    ``diffusion_stage.PARENTS``, and ``__default__``, the embedded default chain."""
    builders: dict[str, Builder] = {name: partial(_folder_pipeline, name) for name in _folders()}
    # `registry` is bound below, before any pipeline is built.
    builders["__default__"] = lambda: _default_pipeline(registry)
    registry = LazyPipelines(builders, more=_stage_builders)
    return registry


def _folders() -> list[str]:
    """The pipeline folders (packages) under ``pipelines/``; lists them without importing."""
    return [
        module.name
        for module in pkgutil.iter_modules(opensora_kedro.pipelines.__path__)
        if module.ispkg and not module.name.startswith(("_", "."))
    ]


def _folder_pipeline(name: str) -> Pipeline:
    """The pipeline of folder ``pipelines/<name>``, tagged."""
    module = importlib.import_module(f"{opensora_kedro.pipelines.__name__}.{name}")
    return module.create_pipeline().tag(TAGS.get(name, ()))


def _stage_builders() -> dict[str, Builder]:
    """A builder per diffusion stage of the stage table."""
    # Imported only here: the stage module imports the training code, which a run of any
    # other pipeline never needs.
    from opensora_kedro.pipelines.diffusion_stage import PARENTS

    return {stage: partial(_stage_pipeline, stage) for stage in PARENTS}


def _stage_pipeline(stage: str) -> Pipeline:
    """Diffusion stage ``stage``'s pipeline, tagged."""
    from opensora_kedro.pipelines.diffusion_stage import stage_pipeline

    return stage_pipeline(stage).tag(TAGS.get(stage, STAGE_TAGS))


def _default_pipeline(registry: LazyPipelines) -> Pipeline:
    """The embedded default: DEFAULT_CHAIN's pipelines, each as one group."""
    return sum((_grouped(registry[name], name) for name in DEFAULT_CHAIN), Pipeline([]))


def _grouped(pipeline: Pipeline, name: str) -> Pipeline:
    """``pipeline`` under the namespace ``name``, every dataset and parameter keeping its own
    name: kedro viz draws each part of the chain as one box to open, not 18 nodes at once.
    (Its nodes are addressed as ``<name>.<node>`` in ``__default__``.)"""
    if all(node.namespace for node in pipeline.nodes):
        return pipeline  # a diffusion stage: namespaced already
    params = {d for d in pipeline.datasets() if d.startswith("params:")}
    return Pipeline(
        pipeline,
        namespace=name,
        inputs={d: d for d in pipeline.inputs() if d not in params and d != "parameters"},
        outputs={d: d for d in pipeline.all_outputs()},
        parameters={p: p for p in params},
    )
