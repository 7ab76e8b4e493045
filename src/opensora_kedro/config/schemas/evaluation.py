"""The ``evaluation`` pipeline's settings."""

from __future__ import annotations

from pydantic import Field

from opensora_kedro.evaluation.params import EvalLossParams, PromptFollowingParams
from opensora_kedro.params import Params


class EvaluationParams(Params):
    """What the ``evaluation`` pipeline measures."""

    loss: EvalLossParams = Field(default_factory=EvalLossParams, description="diffusion loss")
    prompt_following: PromptFollowingParams = Field(
        default_factory=PromptFollowingParams, description="prompt following"
    )
