"""Building blocks shared by several parameter groups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from opensora_kedro.data.aspect import num_pixels, ratio_value

# (key path relative to the model, value, rule)
Issue = tuple[tuple, Any, str]


def nested_params(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Params]]:
    """Every :class:`Params` inside ``value`` (itself, dict values, list items) with its path."""
    if isinstance(value, Params):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from nested_params(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from nested_params(item, (*path, index))


class Params(BaseModel):
    """Base of every schema: unknown keys are errors, defaults are validated too.

    A schema states its own rules in :meth:`cross_checks`, the fields that another setting
    makes inert in :meth:`inert_fields` and the files it reads in :meth:`input_paths`; the
    ``all_*`` methods apply them to this model and to every model nested in it, so a rule
    defined on a nested schema can never be left unwired.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def cross_checks(self, context: dict[str, Any]) -> list[Issue]:
        """Rules across this model's own fields: ``(relative key path, value, rule)``."""
        return []

    def inert_fields(self) -> list[tuple[tuple, str]]:
        """Fields set to a value that another setting makes the code ignore: (path, why)."""
        return []

    def input_paths(self) -> list[tuple[tuple, str]]:
        """Files or folders this model names that the run reads (must exist): (path, value)."""
        return []

    def output_paths(self) -> list[str]:
        """Files or folders the run of this group writes outside the catalog (so a group
        that reads them as inputs finds them made)."""
        return []

    def _children(self) -> Iterator[tuple[tuple, Params]]:
        for name in type(self).model_fields:
            yield from nested_params(getattr(self, name), (name,))

    def all_cross_checks(self, context: dict[str, Any]) -> list[Issue]:
        """:meth:`cross_checks` of this model and of every nested model, with full paths."""
        issues = list(self.cross_checks(context))
        for path, child in self._children():
            issues += [((*path, *p), v, r) for p, v, r in child.all_cross_checks(context)]
        return issues

    def all_inert_fields(self) -> list[tuple[tuple, str]]:
        """:meth:`inert_fields` of this model and of every nested model, with full paths."""
        found = list(self.inert_fields())
        for path, child in self._children():
            found += [((*path, *p), why) for p, why in child.all_inert_fields()]
        return found

    def all_input_paths(self) -> list[tuple[tuple, str]]:
        """:meth:`input_paths` of this model and of every nested model, with full paths."""
        found = list(self.input_paths())
        for path, child in self._children():
            found += [((*path, *p), value) for p, value in child.all_input_paths()]
        return found


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
# The YAML form of a bucket config; `data.bucket.BucketConfig` is the parsed one training uses.
BucketConfigTree = dict[ResolutionName, dict[PositiveInt, BucketEntry]]


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

    def input_paths(self) -> list[tuple[tuple, str]]:
        return [(("from_pretrained",), self.from_pretrained)] if self.local_files_only else []


class PretrainedWeights:
    """Rules of a group whose ``from_pretrained`` weights ``from_scratch`` can switch off (the
    group declares both fields)."""

    def inert_fields(self) -> list[tuple[tuple, str]]:
        if self.from_scratch and self.from_pretrained:
            return [(("from_pretrained",), "from_scratch is true: no weights are loaded")]
        return []

    def input_paths(self) -> list[tuple[tuple, str]]:
        if self.from_pretrained and not self.from_scratch:
            return [(("from_pretrained",), self.from_pretrained)]
        return []


# Every type in models/vae/registry.py (a test keeps the two equal).
VaeType = Literal[
    "hunyuan_vae", "tiny_vae", "dc_ae", "tiny_dc_ae", "autoencoder_2d", "tiny_autoencoder_2d"
]


class AutoencoderParams(PretrainedWeights, Params):
    """The video autoencoder whose latents the diffusion model learns."""

    type: VaeType = Field(description="registered VAE type")
    from_pretrained: str | None = Field(None, description="checkpoint to load, or null")
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


class TrainingSamplesParams(Params):
    """Samples during training, logged to MLflow (generated clips, or VAE reconstructions)."""

    every: PositiveInt | None = Field(None, description="updates between sample sets (null: off)")
    count: PositiveInt = Field(4, description="clips per set: fixed, seeded captions or clips")
    num_steps: PositiveInt = Field(20, description="denoising steps (diffusion)")
    guidance: float = Field(7.5, ge=0, description="text guidance scale (diffusion)")
    num_frames: PositiveInt | None = Field(
        None, description="frames per clip (diffusion; null: the first bucket's longest)"
    )
    seed: int = Field(0, description="seed of the chosen captions or clips and of the noise")


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


# ColossalAI 0.5 (hybrid_parallel_plugin.py): with sequence parallelism on and no mode, the
# plugin builds its groups for all_to_all; modes that split heads need heads % sp == 0.
DEFAULT_SP_MODE = "all_to_all"
HEAD_SPLITTING_SP_MODES = ("all_to_all", "ring_attn")
TP_SHARED_SP_MODES = ("split_gather", "ring")  # sp rides on the tp group, sp_size is ignored


def effective_sp_mode(enable: bool, mode: str | None) -> str | None:
    """The sequence-parallelism mode ColossalAI's HybridParallelPlugin actually runs.

    ``None`` when sequence parallelism is off (the plugin then ignores any mode), the given
    mode, or the plugin's default ``all_to_all`` when none is given. The project passes this
    value to the plugin (its ShardConfig would otherwise default to split_gather).
    """
    if not enable:
        return None
    return mode or DEFAULT_SP_MODE


def _sp_mode_issues(config: PluginConfigParams, num_heads: int | None) -> list[Issue]:
    mode = effective_sp_mode(config.enable_sequence_parallelism, config.sequence_parallelism_mode)
    issues: list[Issue] = []
    if config.sequence_parallelism_mode and mode is None:
        issues.append(
            (("plugin_config", "sequence_parallelism_mode"), config.sequence_parallelism_mode,
             "ignored while enable_sequence_parallelism is false")
        )  # fmt: skip
    if mode in TP_SHARED_SP_MODES:
        if config.tp_size == 1:
            issues.append(
                (
                    ("plugin_config", "sequence_parallelism_mode"),
                    mode,
                    f"{mode} runs on the tensor-parallel group: needs tp_size > 1",
                )
            )
        if config.sp_size > 1:
            issues.append((("plugin_config", "sp_size"), config.sp_size,
                           f"ignored by {mode} (sp follows tp_size): set sp_size 1"))  # fmt: skip
    if num_heads is not None and mode in HEAD_SPLITTING_SP_MODES and num_heads % config.sp_size:
        shown = mode if config.sequence_parallelism_mode else f"{mode} (ColossalAI's default)"
        issues.append(
            (("plugin_config", "sp_size"), config.sp_size,
             f"{shown} splits heads: must divide num_heads ({num_heads})")
        )  # fmt: skip
    return issues


def weight_sharding_issues(config: PluginConfigParams | None) -> list[Issue]:
    """Training refuses tp and pp > 1: no shardformer policy of the project splits weights or
    layers (the MMDiT's splits sequences), so ColossalAI would run copies or fail mid-boost."""
    if config is None:
        return []
    return [
        (("plugin_config", name), getattr(config, name),
         f"{what} is not built for training (the MMDiT policy splits sequences: use sp_size); "
         "set 1")
        for name, what in (("tp_size", "tensor parallelism"), ("pp_size", "pipeline parallelism"))
        if getattr(config, name) > 1
    ]  # fmt: skip


def plugin_needs_cuda(plugin: str | None, config: dict[str, Any] | None) -> bool:
    """Whether ColossalAI needs CUDA for ``plugin``: ZeRO (zero2, hybrid with zero_stage > 0)
    and tensor or pipeline parallelism do not run on a CPU; the hybrid plugin's data and
    sequence parallelism (tp = pp = 1, zero_stage 0) do, over gloo."""
    if plugin not in ("zero2", "hybrid"):
        return False
    config = config or {}
    sizes = [config.get(key, 1) for key in ("tp_size", "pp_size")]
    return plugin == "zero2" or sizes != [1, 1] or config.get("zero_stage", 2) != 0


def plugin_issues(
    plugin: str | None, config: PluginConfigParams | None, num_heads: int | None, world_size: int
) -> list[tuple[tuple, Any, str]]:
    """Parallel sizes that do not fit the plugin, the model (its heads, if any) or the devices."""
    if config is None:
        return []
    issues = _sp_mode_issues(config, num_heads)
    group = config.tp_size * config.sp_size * config.pp_size
    # reported at the largest of the three sizes: the one most likely to change
    largest = max(("sp_size", "tp_size", "pp_size"), key=lambda name: getattr(config, name))
    at = (("plugin_config", largest), getattr(config, largest))
    if plugin != "hybrid" and group > 1:
        issues.append((("plugin",), plugin, f"tp*sp*pp = {group} needs plugin 'hybrid'"))
    if group > world_size:
        issues.append(
            (*at, f"tp*sp*pp = {group} exceeds the {world_size} device(s) of the launcher")
        )
    elif world_size % group:
        issues.append((*at, f"tp*sp*pp = {group} must divide the world size {world_size}"))
    if config.sp_size > 1 and not config.enable_sequence_parallelism:
        issues.append(
            (("plugin_config", "enable_sequence_parallelism"), False, "sp_size > 1 needs it true")
        )
    if num_heads is not None and num_heads % config.tp_size:
        issues.append(
            (("plugin_config", "tp_size"), config.tp_size, f"must divide num_heads ({num_heads})")
        )
    return issues
