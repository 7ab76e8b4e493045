"""The ``evaluation`` pipeline's settings."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from opensora_kedro.config.schemas.common import Params, PositiveInt


class EvalLossParams(Params):
    """Open-Sora v1.3's evaluation loss on the clips a stage's training held out."""

    num_timesteps: PositiveInt = Field(10, description="evenly spaced t the loss is taken at")
    max_clips: PositiveInt = Field(32, description="held-out clips evaluated")


class PromptFollowingParams(Params):
    """Generated clips for held-out prompts of the demo grammar, measured from their pixels."""

    num_prompts: PositiveInt = Field(30, description="prompts generated (one clip each)")
    seed: int = Field(0, description="which held-out prompts are drawn")
    frames_shown: PositiveInt = Field(4, description="frames per clip on the contact sheet")
    sampling: dict[str, Any] | None = Field(
        None, description="overrides of the inference preset's sampling_option"
    )


class EvaluationParams(Params):
    """What the ``evaluation`` pipeline measures."""

    loss: EvalLossParams = Field(default_factory=EvalLossParams, description="diffusion loss")
    prompt_following: PromptFollowingParams = Field(
        default_factory=PromptFollowingParams, description="prompt following"
    )
