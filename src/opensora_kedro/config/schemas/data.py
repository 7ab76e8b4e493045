"""The data pipelines: demo clips and data processing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from opensora_kedro.config.schemas.common import NonNegativeInt, Params, PositiveInt

NonNegativeFloat = Annotated[float, Field(ge=0)]


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


class ScanParams(Params):
    """Probing the raw files."""

    workers: PositiveInt | None = Field(None, description="threads probing files (null: CPU cores)")
    check_frames: PositiveInt = Field(2, description="frames decoded per file to prove it usable")


class MotionParams(Params):
    """The VMAF motion score (libvmaf's motion feature, as Open-Sora's tool computes it)."""

    variant: Literal["integer", "float"] = Field("integer", description="libvmaf feature variant")
    edge_rule: Literal["3.1", "3.2"] = Field("3.2", description="libvmaf version's edge mirroring")
    workers: PositiveInt | None = Field(None, description="threads scoring clips (null: CPU cores)")


class DedupParams(Params):
    """Near-duplicate clips, by perceptual hashes of a few frames (opensora_kedro.data.dedup)."""

    enabled: bool = Field(True, description="hash the clips and reject near-duplicates")
    frames: PositiveInt = Field(4, description="frames hashed per clip, evenly spaced")
    max_distance: int = Field(
        3, ge=0, le=31, description="most differing bits (of 64) per frame hash for a duplicate"
    )
    workers: PositiveInt | None = Field(None, description="threads hashing clips (null: cores)")


class FilterParams(Params):
    """Which clips are left out of the training table (null: no limit)."""

    min_frames: PositiveInt | None = Field(None, description="fewest frames a clip may have")
    max_frames: PositiveInt | None = Field(None, description="most frames a clip may have")
    min_height: PositiveInt | None = Field(None, description="smallest height in pixels")
    min_width: PositiveInt | None = Field(None, description="smallest width in pixels")
    max_resolution: PositiveInt | None = Field(None, description="most pixels (H*W) per frame")
    min_fps: NonNegativeFloat | None = Field(None, description="lowest frame rate")
    max_fps: NonNegativeFloat | None = Field(None, description="highest frame rate")
    min_motion: NonNegativeFloat | None = Field(None, description="lowest VMAF motion score")
    max_motion: NonNegativeFloat | None = Field(None, description="highest VMAF motion score")
    remove_duplicate_paths: bool = Field(True, description="keep only the first row of a path")
    remove_empty_captions: bool = Field(True, description="drop clips whose caption is empty")

    def cross_checks(self, context):
        pairs = [("frames", self.min_frames, self.max_frames), ("fps", self.min_fps, self.max_fps),
                 ("motion", self.min_motion, self.max_motion)]  # fmt: skip
        return [
            ((f"min_{name}",), low, f"must not exceed max_{name} ({high})")
            for name, low, high in pairs
            if low is not None and high is not None and low > high
        ]


class DataProcessingParams(Params):
    """Scanning, scoring, filtering and bucketing of the raw videos.

    Training captions and the bucket report follow the training stage's ``dataset``
    (fps_max, vmaf) and ``bucket_config``.
    """

    scan: ScanParams = Field(description="probing the raw files")
    dedup: DedupParams = Field(default_factory=DedupParams, description="near-duplicate clips")
    motion: MotionParams = Field(description="the VMAF motion score")
    filter: FilterParams = Field(description="thresholds of the training table")
