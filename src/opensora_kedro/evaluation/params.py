"""What the evaluation measures: held-out loss, prompt following."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from opensora_kedro.params import (
    Issue,
    NonNegativeInt,
    Params,
    PositiveInt,
)
from opensora_kedro.sampling.params import SamplingParams


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
        None, description="overrides of the inference preset's sampling_option (its keys)"
    )

    def cross_checks(self, context: dict[str, Any]) -> list[Issue]:
        # Checked here as sampling_option values, so the node can apply them as they are.
        try:
            SamplingParams.model_validate(self.sampling or {})
        except ValidationError as error:
            return [
                (("sampling", *map(str, detail["loc"])), detail.get("input"),
                 "unknown key: not a sampling_option key" if detail["type"] == "extra_forbidden"
                 else detail["msg"])
                for detail in error.errors()
            ]  # fmt: skip
        return []
