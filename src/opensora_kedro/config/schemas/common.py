"""Building blocks shared by several parameter groups."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from opensora_kedro.data.aspect import num_pixels, ratio_value


class Params(BaseModel):
    """Base of every schema: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        """Rules across fields: ``(relative key path, value, rule)`` for each violation."""
        return []


def _check_resolution(name: str) -> str:
    num_pixels(name)  # raises ValueError saying what a resolution name looks like
    return name


def _check_ratio(name: str) -> str:
    ratio_value(name)
    return name


ResolutionName = Annotated[str, AfterValidator(_check_resolution)]
RatioName = Annotated[str, AfterValidator(_check_ratio)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Dtype = Literal["bf16", "fp16", "fp32"]
PluginName = Literal["ddp", "zero2", "hybrid"]
CondType = Literal["t2v", "i2v_head", "i2v_tail", "i2v_loop", "v2v_head", "v2v_tail"]
# Either the probability of taking a bucket, or (p_keep_at_this_resolution, p_skip_to_shorter_t).
BucketProbability = Probability | tuple[Probability, Probability]
BucketEntry = tuple[BucketProbability, PositiveInt]
BucketConfig = dict[ResolutionName, dict[PositiveInt, BucketEntry]]


def bucket_frame_issues(
    bucket_config: dict[str, dict[int, Any]], rule: str, valid
) -> list[tuple[tuple, Any, str]]:
    """Frame keys of ``bucket_config`` that ``valid(t)`` rejects, as cross-check issues."""
    return [
        (("bucket_config", resolution, frames), frames, rule)
        for resolution, entries in bucket_config.items()
        for frames in entries
        if not valid(frames)
    ]


class TextEncoderParams(Params):
    """A Hugging Face text encoder (T5 or CLIP) loaded with ``from_pretrained``."""

    from_pretrained: str = Field(description="model name or local folder for from_pretrained")
    max_length: PositiveInt = Field(description="tokens per caption (padding and truncation)")
    shardformer: bool = Field(False, description="shard the encoder with ColossalAI shardformer")
    cache_dir: str | None = Field(None, description="Hugging Face cache folder for downloads")
    local_files_only: bool = Field(True, description="never download; load only local files")


class AutoencoderParams(Params):
    """The video autoencoder whose latents the diffusion model learns."""

    type: Literal["hunyuan_vae", "dc_ae", "tiny_vae"] = Field(description="registered VAE type")
    from_pretrained: str | None = Field(None, description="checkpoint to load, or null")
    model_name: str | None = Field(
        None, description="named DC-AE configuration, e.g. dc-ae-f32t4c128"
    )
    from_scratch: bool = Field(False, description="build without loading weights")
    in_channels: PositiveInt = Field(3, description="channels of the input video")
    out_channels: PositiveInt = Field(3, description="channels of the decoded video")
    layers_per_block: PositiveInt = Field(2, description="residual layers per resolution level")
    latent_channels: PositiveInt = Field(16, description="channels of the latent")
    scaling_factor: float | None = Field(None, description="latent scale applied after encoding")
    use_spatial_tiling: bool = Field(False, description="encode/decode in spatial tiles")
    use_temporal_tiling: bool = Field(False, description="encode/decode in temporal tiles")
    spatial_tile_size: PositiveInt | None = Field(None, description="tile side in pixels")
    temporal_tile_size: PositiveInt | None = Field(None, description="tile length in frames")
    tile_overlap_factor: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None, description="overlap between neighbouring tiles"
    )


class OptimizerParams(Params):
    """The optimizer (Open-Sora: HybridAdam in AdamW mode)."""

    cls: Literal["HybridAdam", "AdamW"] = Field("HybridAdam", description="optimizer class")
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = Field(description="peak learning rate, in (0, 1]")
    eps: Annotated[float, Field(gt=0.0)] = Field(1e-8, description="Adam epsilon")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(0.0, description="decoupled weight decay")
    adamw_mode: bool = Field(True, description="decoupled (AdamW) weight decay")
    betas: tuple[Probability, Probability] = Field((0.9, 0.999), description="Adam betas")


class PluginConfigParams(Params):
    """Settings of the ColossalAI Booster plugin."""

    reduce_bucket_size_in_m: PositiveInt = Field(128, description="ZeRO reduce bucket, millions")
    overlap_allgather: bool = Field(False, description="overlap ZeRO all-gather with compute")
    tp_size: PositiveInt = Field(1, description="tensor-parallel group size (hybrid)")
    pp_size: PositiveInt = Field(1, description="pipeline-parallel group size (hybrid)")
    sp_size: PositiveInt = Field(1, description="sequence-parallel group size (hybrid)")
    sequence_parallelism_mode: Literal["ring_attn", "all_to_all", "split_gather", "ring"] | None = (
        Field(None, description="how the sequence is split across sp ranks")
    )
    enable_sequence_parallelism: bool = Field(False, description="turn sequence parallelism on")
    static_graph: bool = Field(False, description="DDP static graph optimisation")
    zero_stage: Literal[0, 1, 2] = Field(2, description="ZeRO stage inside the hybrid plugin")


def plugin_issues(
    plugin: str | None, config: PluginConfigParams | None, num_heads: int | None, world_size: int
) -> list[tuple[tuple, Any, str]]:
    """Parallel sizes that do not fit the plugin, the model (its heads, if any) or the devices."""
    if config is None:
        return []
    issues = []
    group = config.tp_size * config.sp_size * config.pp_size
    if plugin != "hybrid" and group > 1:
        issues.append((("plugin",), plugin, f"tp*sp*pp = {group} needs plugin 'hybrid'"))
    if group > world_size:
        issues.append(
            (("plugin_config", "sp_size"), config.sp_size,
             f"tp*sp*pp = {group} exceeds the {world_size} device(s) of the launcher")
        )  # fmt: skip
    elif world_size % group:
        issues.append(
            (("plugin_config", "sp_size"), config.sp_size,
             f"tp*sp*pp = {group} must divide the world size {world_size}")
        )  # fmt: skip
    if config.sp_size > 1 and not config.enable_sequence_parallelism:
        issues.append(
            (("plugin_config", "enable_sequence_parallelism"), False, "sp_size > 1 needs it true")
        )
    if num_heads is not None and num_heads % config.tp_size:
        issues.append(
            (("plugin_config", "tp_size"), config.tp_size, f"must divide num_heads ({num_heads})")
        )
    # ring_attn runs as all-to-all here (training/mmdit_policy.py): both split the heads.
    if (
        num_heads is not None
        and config.sequence_parallelism_mode in ("all_to_all", "ring_attn")
        and num_heads % config.sp_size
    ):
        issues.append(
            (("plugin_config", "sp_size"), config.sp_size,
             f"{config.sequence_parallelism_mode} splits heads: must divide num_heads "
             f"({num_heads})")
        )  # fmt: skip
    return issues
