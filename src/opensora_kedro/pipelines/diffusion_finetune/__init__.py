"""The ``diffusion_finetune`` pipeline: an instance of the one diffusion stage pipeline."""

from kedro.pipeline import Pipeline

from opensora_kedro.pipelines.diffusion_stage import stage_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """The pipeline, for the registry."""
    return stage_pipeline("diffusion_finetune")
