"""The per-clip data stages' parameters: scan, shots, dedup, motion, filters, the engine."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from opensora_kedro.params import (
    Params,
    PositiveInt,
)

NonNegativeFloat = Annotated[float, Field(ge=0)]


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
    """Near-duplicate clips: by perceptual hashes of a few frames (opensora_kedro.data.dedup)
    or by CLIP embedding similarity (opensora_kedro.data.semantic_dedup)."""

    enabled: bool = Field(True, description="hash the clips and reject near-duplicates")
    method: Literal["dhash", "clip"] = Field(
        "dhash",
        description="dhash: frame hashes within max_distance bits; clip: CLIP "
        "embeddings at least min_similarity alike (needs clip_model)",
    )
    frames: PositiveInt = Field(4, description="frames hashed (or embedded) per clip")
    max_distance: int = Field(
        3, ge=0, le=31, description="most differing bits (of 64) per frame hash for a duplicate"
    )
    clip_model: str | None = Field(
        None, description="folder of a CLIPModel + CLIPProcessor (method: clip)"
    )
    min_similarity: float = Field(
        0.95, gt=0, le=1, description="least cosine similarity of two duplicates (method: clip)"
    )
    device: str = Field("auto", description="where CLIP runs (method: clip)")
    workers: PositiveInt | None = Field(None, description="threads hashing clips (null: cores)")

    def cross_checks(self, context):
        if self.enabled and self.method == "clip" and self.clip_model is None:
            return [(("clip_model",), None, "method clip needs a CLIP model folder")]
        return []

    def input_paths(self) -> list[tuple[tuple, str]]:
        if self.enabled and self.method == "clip" and self.clip_model:
            return [(("clip_model",), self.clip_model)]
        return []


class ShotParams(Params):
    """Shot detection and splitting (opensora_kedro.video.shots; PySceneDetect over PyAV)."""

    enabled: bool = Field(True, description="cut videos into shots (off: a video is one clip)")
    detector: Literal["content", "adaptive"] = Field(
        "adaptive", description="scenedetect's ContentDetector or AdaptiveDetector (Open-Sora's)"
    )
    threshold: NonNegativeFloat | None = Field(
        None, description="the detector's threshold (null: content 27, adaptive 3.0)"
    )
    min_scene_frames: PositiveInt = Field(15, description="fewest frames between two cuts")
    min_seconds: NonNegativeFloat | None = Field(
        2.0, description="shorter shots are dropped (Open-Sora v1.3: 2 s; null: no limit)"
    )
    max_seconds: Annotated[float, Field(gt=0)] | None = Field(
        15.0, description="longer shots keep their first max_seconds (null: no limit)"
    )
    crf: int = Field(18, ge=0, le=51, description="H.264 quality of cut shots (18: near lossless)")
    inherit_caption: bool = Field(
        False, description="cut shots keep their video's caption (else they need the captioner)"
    )
    workers: PositiveInt | None = Field(None, description="threads splitting (null: cores)")

    def cross_checks(self, context):
        low, high = self.min_seconds, self.max_seconds
        if low is not None and high is not None and low > high:
            return [(("min_seconds",), low, f"must not exceed max_seconds ({high})")]
        return []


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
    min_aesthetic: float | None = Field(None, description="lowest aesthetic score (quality)")
    min_match: float | None = Field(
        None, description="lowest text-video match score (100 x CLIP cosine; quality)"
    )
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


class RayParams(Params):
    """The Ray cluster the per-clip stages run on with ``engine: ray``."""

    address: str | None = Field(
        None,
        description="null: start Ray on this machine; auto: join the cluster this machine is "
        "part of (`ray start`); ray://host:10001: a remote cluster",
    )
    workers: PositiveInt | None = Field(
        None, description="Ray tasks (or model actors) in flight per stage (null: every CPU/GPU)"
    )
    gpus_per_model_worker: NonNegativeFloat = Field(
        0.0, description="GPUs each actor of a stage that runs a model asks for"
    )
    runtime_env: dict = Field(
        default_factory=dict, description="Ray runtime_env for the workers (e.g. env_vars)"
    )
