"""The data pipelines: demo clips and data processing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from opensora_kedro.captioning.params import CaptioningParams
from opensora_kedro.data.params import (
    DedupParams,
    FilterParams,
    MotionParams,
    RayParams,
    ScanParams,
    ShotParams,
)
from opensora_kedro.params import NonNegativeInt, Params, PositiveInt
from opensora_kedro.quality.params import QualityParams


class MultiShotParams(Params):
    """Demo videos of several shots (each another object on another background), uncaptioned."""

    count: NonNegativeInt = Field(0, description="videos to render")
    shots: Annotated[int, Field(ge=1, le=4)] = Field(3, description="shots per video (1-4)")
    frames: PositiveInt = Field(12, description="frames per shot")


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
    multishot: MultiShotParams = Field(
        default_factory=MultiShotParams,
        description="uncaptioned multi-shot videos (shot splitting's demo)",
    )
    held_out_every: NonNegativeInt = Field(
        0,
        description="never render 1 in k (colour, shape, direction) combinations, so the "
        "evaluation can ask for unseen ones (0: render all)",
    )

    def cross_checks(self, context):
        return [
            (("sizes", index), size, "H.264 (yuv420p) needs even width and height")
            for index, size in enumerate(self.sizes)
            if size[0] % 2 or size[1] % 2
        ]


class DataProcessingParams(Params):
    """Scanning, scoring, filtering and bucketing of the raw videos.

    Training captions and the bucket report follow the training stage's ``dataset``
    (fps_max, vmaf) and ``bucket_config``.
    """

    engine: Literal["local", "ray"] = Field(
        "local", description="where the per-clip stages run: threads here, or a Ray cluster"
    )
    ray: RayParams = Field(default_factory=RayParams, description="the Ray cluster (engine: ray)")
    scan: ScanParams = Field(description="probing the raw files")
    shots: ShotParams = Field(default_factory=ShotParams, description="cutting videos into shots")
    dedup: DedupParams = Field(default_factory=DedupParams, description="near-duplicate clips")
    motion: MotionParams = Field(description="the VMAF motion score")
    captioning: CaptioningParams = Field(description="captions written by a VLM")
    quality: QualityParams = Field(description="learned quality scores")
    filter: FilterParams = Field(description="thresholds of the training table")

    def cross_checks(self, context):
        issues = []
        for name in ("min_aesthetic", "min_match"):
            value = getattr(self.filter, name)
            if value is not None and not self.quality.enabled:
                issues.append((("filter", name), value, "needs quality.enabled: true"))
        if self.filter.min_aesthetic is not None and self.quality.aesthetic_head is None:
            rule = "needs quality.aesthetic_head (no aesthetic score without it)"
            issues.append((("filter", "min_aesthetic"), self.filter.min_aesthetic, rule))
        return issues
