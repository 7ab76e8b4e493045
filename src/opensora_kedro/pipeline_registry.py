"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

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
# where it wants to run.
TAGS = {
    "demo_data": ("data",),
    "data_processing": ("data",),
    "text_embedding": ("data", "gpu"),
    "vae_training": ("training", "gpu"),
    "diffusion_image": ("training", "gpu"),
    "diffusion_stage1": ("training", "gpu"),
    "diffusion_stage2": ("training", "gpu"),
    "diffusion_stage1_i2v": ("training", "gpu"),
    "diffusion_stage2_i2v": ("training", "gpu"),
    "diffusion_finetune": ("training", "gpu"),
    "evaluation": ("evaluation", "gpu"),
    "inference": ("inference", "gpu"),
}


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline under ``pipelines/``, plus ``__default__``: the embedded default chain.

    Kedro 1.7 imports only the pipelines a run asks for, so ``__default__`` is
    built only when its parts were loaded (a run of ``__default__`` loads them all).
    """
    pipelines = {
        name: pipeline.tag(TAGS.get(name, ()))
        for name, pipeline in find_pipelines(raise_errors=True).items()
    }
    if all(name in pipelines for name in DEFAULT_CHAIN):
        pipelines["__default__"] = sum(
            (_grouped(pipelines[name], name) for name in DEFAULT_CHAIN), Pipeline([])
        )
    return pipelines


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
