"""The VLM captioner's parameters."""

from __future__ import annotations

from pydantic import Field

from opensora_kedro.params import (
    Params,
    PositiveInt,
)


class CaptioningParams(Params):
    """Captions written by a vision-language model (opensora_kedro.captioning)."""

    enabled: bool = Field(False, description="caption clips (off: uncaptioned clips are rejected)")
    overwrite: bool = Field(False, description="caption every clip, not only those without one")
    model: str = Field(description="folder of an image-text-to-text model + processor")
    prompt: str = Field("Describe this video in one sentence.", description="the instruction")
    frames: PositiveInt = Field(3, description="frames per clip, given as that many images")
    max_new_tokens: PositiveInt = Field(60, description="longest caption, in tokens")
    batch_size: PositiveInt = Field(4, description="clips per generate call")
    device: str = Field("cpu", description="cpu, cuda, cuda:N")
    dtype: str = Field("auto", description="weights dtype (auto: as saved)")

    def input_paths(self) -> list[tuple[tuple, str]]:
        return [(("model",), self.model)] if self.enabled else []
