"""The ``evaluation`` pipeline's settings."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from opensora_kedro.config.schemas.common import NonNegativeInt, Params, PositiveInt


class EvalLossParams(Params):
    """Open-Sora v1.3's evaluation loss on the clips a stage's training held out."""

    num_timesteps: PositiveInt = Field(10, description="evenly spaced t the loss is taken at")
    max_clips: PositiveInt = Field(32, description="held-out clips evaluated")


class PromptFollowingParams(Params):
    """Generated clips for prompts of the demo grammar, measured from their pixels: prompts of
    combinations no training caption describes (unseen) and of trained ones (seen)."""

    num_unseen_prompts: NonNegativeInt = Field(
        60, description="prompts of unseen combinations (each combination once per round)"
    )
    num_seen_prompts: NonNegativeInt = Field(30, description="prompts of trained combinations")
    batch_size: PositiveInt = Field(16, description="clips generated together")
    seed: int = Field(0, description="which prompts are drawn")
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
