"""The learned quality scores' parameters."""

from __future__ import annotations

from pydantic import Field

from opensora_kedro.params import (
    Params,
    PositiveInt,
)


class QualityParams(Params):
    """Learned quality scores: LAION aesthetic head and CLIP text-video match
    (opensora_kedro.quality)."""

    enabled: bool = Field(True, description="score every clip")
    clip_model: str = Field(description="folder of a transformers CLIPModel + CLIPProcessor")
    aesthetic_head: str | None = Field(
        None, description=".safetensors of the LAION aesthetic MLP (null: no aesthetic score)"
    )
    build_if_missing: bool = Field(
        False, description="build tiny random models there when missing (the embedded default)"
    )
    frames: PositiveInt = Field(3, description="frames sampled evenly per clip")
    batch_size: PositiveInt = Field(16, description="clips per forward pass")
    device: str = Field("cpu", description="cpu, cuda, cuda:N, auto")

    def input_paths(self) -> list[tuple[tuple, str]]:
        if not self.enabled or self.build_if_missing:
            return []
        paths = [(("clip_model",), self.clip_model)]
        return paths + ([(("aesthetic_head",), self.aesthetic_head)] if self.aesthetic_head else [])
