"""The data pipelines: demo clips and data processing."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from opensora_kedro.config.schemas.common import NonNegativeInt, Params, PositiveInt


class DemoDataParams(Params):
    """The embedded default's synthetic clips."""

    num_clips: NonNegativeInt = Field(description="videos to render (.mp4, H.264)")
    num_images: NonNegativeInt = Field(0, description="stills to render, alternating .png / .jpg")
    sizes: list[tuple[PositiveInt, PositiveInt]] = Field(
        min_length=1, description="[width, height] choices; H.264 needs even sides"
    )
    fps: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="frame-rate choices")
    lengths: list[PositiveInt] = Field(min_length=1, description="frame-count choices")
    seed: int = Field(0, description="seed of the whole set")
    crf: Annotated[int, Field(ge=0, le=51)] = Field(20, description="H.264 quality (0 = lossless)")

    def cross_checks(self, context):
        return [
            (("sizes", index), size, "H.264 (yuv420p) needs even width and height")
            for index, size in enumerate(self.sizes)
            if size[0] % 2 or size[1] % 2
        ]


class ScanParams(Params):
    """Probing the raw files."""

    workers: PositiveInt | None = Field(None, description="threads probing files (null: CPU cores)")
    check_frames: PositiveInt = Field(2, description="frames decoded per file to prove it usable")


class DataProcessingParams(Params):
    """Scanning, scoring, filtering and bucketing of the raw videos."""

    scan: ScanParams = Field(description="probing the raw files")
