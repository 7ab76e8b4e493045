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


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline under ``pipelines/``, plus ``__default__``: the embedded default chain.

    Kedro 1.7 imports only the pipelines a run asks for, so ``__default__`` is
    built only when its parts were loaded (a run of ``__default__`` loads them all).
    """
    pipelines = find_pipelines(raise_errors=True)
    if all(name in pipelines for name in DEFAULT_CHAIN):
        pipelines["__default__"] = sum((pipelines[name] for name in DEFAULT_CHAIN), Pipeline([]))
    return pipelines
