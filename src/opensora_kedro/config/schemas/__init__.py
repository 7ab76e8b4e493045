"""The schema of every parameter group, composed of the parameter classes each library package
owns (``<package>/params.py``), and the registry that maps group names to them."""

from __future__ import annotations

from pydantic import BaseModel

from opensora_kedro.config.schemas.data import DataProcessingParams, DemoDataParams
from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.config.schemas.evaluation import EvaluationParams
from opensora_kedro.config.schemas.inference import InferenceParams
from opensora_kedro.config.schemas.text import TextEmbeddingParams
from opensora_kedro.config.schemas.vae import VaeTrainingParams
from opensora_kedro.runtime.params import LauncherParams

# Exact group names, then prefixes (a stage or preset family shares one schema).
GROUPS: dict[str, type[BaseModel]] = {
    "demo_data": DemoDataParams,
    "data_processing": DataProcessingParams,
    "launcher": LauncherParams,
    "vae_training": VaeTrainingParams,
    "inference": InferenceParams,
    "evaluation": EvaluationParams,
    "text_embedding": TextEmbeddingParams,
}
PREFIXES: dict[str, type[BaseModel]] = {
    "diffusion_": DiffusionStageParams,
    "inference_": InferenceParams,
}


def schema_for(group: str) -> type[BaseModel] | None:
    """The schema of a top-level parameter group, or None for an unknown group."""
    if group in GROUPS:
        return GROUPS[group]
    for prefix, schema in PREFIXES.items():
        if group.startswith(prefix):
            return schema
    return None
