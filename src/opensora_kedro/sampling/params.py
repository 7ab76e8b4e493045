"""The sampler's parameters (Open-Sora's sampling_option)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from opensora_kedro.params import (
    Params,
    PositiveInt,
    RatioName,
    ResolutionName,
)

InferenceCondType = Literal[
    "t2v", "i2v_head", "i2v_tail", "i2v_loop", "v2v_head", "v2v_tail", "v2v_head_half",
    "v2v_tail_half",
]  # fmt: skip


class SamplingParams(Params):
    """The sampler's settings (Open-Sora's ``sampling_option``)."""

    resolution: ResolutionName = Field("256px", description="resolution name of the output")
    aspect_ratio: RatioName = Field("16:9", description="output aspect ratio w:h")
    num_frames: PositiveInt = Field(129, description="frames to generate (4k+1 for a causal VAE)")
    num_steps: PositiveInt = Field(50, description="Euler steps")
    shift: bool = Field(True, description="resolution/length-dependent timestep shift")
    temporal_reduction: PositiveInt = Field(4, description="VAE temporal compression")
    is_causal_vae: bool = Field(True, description="the VAE is causal")
    guidance: Annotated[float, Field(ge=0)] = Field(7.5, description="text guidance scale")
    guidance_img: Annotated[float, Field(ge=0)] = Field(3.0, description="image guidance scale")
    text_osci: bool = Field(True, description="oscillate text guidance between steps")
    image_osci: bool = Field(True, description="oscillate image guidance between steps")
    scale_temporal_osci: bool = Field(True, description="scale image guidance over time")
    method: Literal["i2v", "distill"] = Field("i2v", description="denoiser")
    seed: int | None = Field(None, description="sampling seed (null: the run's seed)")
