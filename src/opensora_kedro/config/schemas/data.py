"""The data pipelines: demo clips and data processing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from opensora_kedro.config.schemas.common import NonNegativeInt, Params, PositiveInt

NonNegativeFloat = Annotated[float, Field(ge=0)]


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
    max_seconds: NonNegativeFloat | None = Field(
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
