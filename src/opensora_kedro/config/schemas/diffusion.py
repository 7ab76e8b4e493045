"""Diffusion training stages (image, stage1, stage2, stage1_i2v, stage2_i2v)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from opensora_kedro.config.schemas.common import (
    AutoencoderParams,
    BucketConfigTree,
    CondType,
    Dtype,
    NonNegativeInt,
    OptimizerParams,
    Params,
    PluginConfigParams,
    PluginName,
    PositiveInt,
    Probability,
    TextEncoderParams,
    TrainingSamplesParams,
    bucket_frame_issues,
    plugin_issues,
    weight_sharding_issues,
)
from opensora_kedro.models.lora import DEFAULT_TARGETS


class VideoDatasetParams(Params):
    """Where training clips come from and how they are read."""

    type: Literal["video_text", "cached_video_text"] = Field(
        "video_text", description="dataset class: decode clips, or read cached latents"
    )
    latent_cache_dir: str = Field(
        "data/04_feature/latents", description="where cached_video_text keeps VAE posteriors"
    )
    latent_windows: Literal["fixed", "per_epoch"] = Field(
        "fixed",
        description="cached_video_text: one temporal window per clip (Open-Sora's pre-encoded "
        "latents), or a fresh window every epoch, each encoded once and cached",
    )
    transform_name: Literal["resize_crop", "center"] = Field(
        "resize_crop", description="how a clip is fitted to its bucket's size"
    )
    fps_max: Annotated[float, Field(gt=0)] | None = Field(
        24, description="frames above this rate are strided down (null: never)"
    )
    vmaf: bool = Field(True, description="append the motion score to training captions")


class MMDiTParams(Params):
    """The MMDiT (Flux-style) diffusion transformer."""

    type: Literal["flux"] = Field("flux", description="registered model type")
    from_pretrained: str | None = Field(None, description="checkpoint to start from, or null")
    strict_load: bool = Field(False, description="fail on missing or unexpected weights")
    guidance_embed: bool = Field(False, description="embed a guidance scale (distilled models)")
    fused_qkv: bool = Field(False, description="one projection for q, k and v")
    use_liger_rope: bool = Field(
        True,
        description="RoPE convention of an Open-Sora/Flux-format from_pretrained file: true = "
        "rotate-half (Open-Sora 2.0), false = interleaved (FLUX.1); converted at load",
    )
    cond_embed: bool = Field(False, description="input for i2v/v2v conditioning latents")
    in_channels: PositiveInt = Field(64, description="latent channels x patch area")
    vec_in_dim: PositiveInt = Field(768, description="width of the pooled CLIP vector")
    context_in_dim: PositiveInt = Field(4096, description="width of the T5 token embeddings")
    hidden_size: PositiveInt = Field(3072, description="transformer width")
    mlp_ratio: Annotated[float, Field(gt=0)] = Field(4.0, description="MLP width / hidden size")
    num_heads: PositiveInt = Field(24, description="attention heads")
    depth: NonNegativeInt = Field(19, description="double-stream blocks")
    depth_single_blocks: NonNegativeInt = Field(38, description="single-stream blocks")
    axes_dim: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (16, 56, 56), description="RoPE dims per (t, h, w) axis; sum = head dim"
    )
    theta: PositiveInt = Field(10000, description="RoPE base")
    qkv_bias: bool = Field(True, description="bias in the qkv projection")
    patch_size: PositiveInt = Field(2, description="latent patch side (1 for DC-AE latents)")
    lora_path: str | None = Field(
        None, description="LoRA adapter folder (peft format) merged into from_pretrained at load"
    )

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        head_dim = sum(self.axes_dim)
        if self.hidden_size != self.num_heads * head_dim:
            rule = f"must equal num_heads * sum(axes_dim) = {self.num_heads} * {head_dim}"
            return [(("hidden_size",), self.hidden_size, rule)]
        return []

    def input_paths(self) -> list[tuple[tuple, str]]:
        return [(("from_pretrained",), self.from_pretrained)] if self.from_pretrained else []


class LoraParams(Params):
    """LoRA fine-tuning (Open-Sora's ``lora_config``): only the adapters train; EMA is off."""

    r: PositiveInt = Field(16, description="adapter rank")
    lora_alpha: Annotated[float, Field(gt=0)] = Field(16, description="adapter scale numerator")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS), min_length=1,
        description="names (suffixes) of the linear layers that get adapters",
    )  # fmt: skip
    lora_dropout: Probability = Field(0.0, description="dropout on the adapter input")
    merge: bool = Field(
        False, description="export merged weights (else the base weights plus a lora/ adapter)"
    )
    pretrained_dir: str | None = Field(
        None, description="adapter folder to continue training from, or null for new adapters"
    )


class DiffusionEvalParams(Params):
    """Clips kept out of a stage's training, for the ``evaluation`` pipeline's loss."""

    holdout_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="share of clips (by path hash) kept out of training"
    )


class ProbeParams(Params):
    """The batch-size probe (``kedro opensora probe-batch-sizes``): largest batch per bucket."""

    memory_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.9, description="share of the device's memory a training step may use"
    )
    max_batch: PositiveInt = Field(1024, description="largest batch tried for any bucket")
    steps_per_trial: PositiveInt = Field(
        2, description="training steps per tried batch (the 2nd holds the optimizer state)"
    )
    output_dir: str = Field(
        "data/08_reporting/batch_probe", description="where the bucket_config and report go"
    )


class DiffusionStageParams(Params):
    """One diffusion training stage; a stage states only what differs from the one it extends."""

    # Its job runs on launched workers, which resolve its `auto` keys again (config.hardware).
    RESOLVED_ON_WORKERS: ClassVar[bool] = True

    extends: str | None = Field(None, description="the stage this one inherits from")
    dataset: VideoDatasetParams = Field(description="training data")
    bucket_config: BucketConfigTree = Field(
        description="{resolution: {num_frames: [probability, batch_size per GPU]}}"
    )
    model: MMDiTParams = Field(description="the diffusion model")
    grad_ckpt_settings: tuple[NonNegativeInt, NonNegativeInt] | None = Field(
        None, description="checkpoint the first a double and b single blocks"
    )
    dropout_ratio: dict[Literal["t5", "clip"], Probability] = Field(
        description="probability of replacing each encoder's caption with the empty one"
    )
    ae: AutoencoderParams = Field(description="the video autoencoder")
    is_causal_vae: bool = Field(True, description="the VAE is causal: frame counts are 4k+1")
    t5: TextEncoderParams = Field(description="T5 text encoder")
    clip: TextEncoderParams = Field(description="CLIP text encoder")
    optim: OptimizerParams = Field(description="optimizer")
    warmup_steps: NonNegativeInt = Field(0, description="linear learning-rate warm-up steps")
    use_cosine_scheduler: bool = Field(
        False, description="after warm-up, decay the LR to 0 by a cosine over max_steps"
    )
    grad_clip: Annotated[float, Field(gt=0)] | None = Field(1.0, description="max grad norm")
    accumulation_steps: PositiveInt = Field(1, description="micro-batches per optimizer update")
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="EMA decay of the weights, or null for no EMA"
    )
    dtype: Dtype = Field("bf16", description="training precision ('auto': from the hardware)")
    plugin: PluginName = Field("zero2", description="ColossalAI Booster plugin")
    plugin_config: PluginConfigParams = Field(description="plugin settings")
    grad_checkpoint: bool = Field(True, description="gradient checkpointing ('auto' allowed)")
    batch_size_scale: Annotated[float, Field(gt=0)] = Field(
        1.0, description="multiplies every bucket batch size ('auto': from GPU memory)"
    )
    num_workers: NonNegativeInt = Field(12, description="data-loader worker processes")
    prefetch_factor: PositiveInt | None = Field(2, description="batches prefetched per worker")
    seed: int = Field(42, description="seed of sampling, noise and initialisation")
    epochs: PositiveInt = Field(1000, description="passes over the data")
    max_steps: PositiveInt | None = Field(None, description="stop after this many updates")
    log_every: PositiveInt | None = Field(
        None, description="updates between metric logs (null: max_steps / 100, at least 1)"
    )
    ckpt_every: PositiveInt = Field(100, description="steps between checkpoints")
    samples: TrainingSamplesParams = Field(
        default_factory=TrainingSamplesParams, description="samples during training (MLflow)"
    )
    keep_n_latest: PositiveInt = Field(20, description="checkpoints kept on disk")
    condition_config: dict[CondType, Annotated[float, Field(ge=0)]] | None = Field(
        None, description="weights of the conditioning types drawn per sample (null: t2v)"
    )
    sigma_min: Annotated[float, Field(ge=0, lt=1)] = Field(1e-5, description="rectified-flow σ_min")
    sample_posterior: bool = Field(
        True,
        description="train on a posterior sample of each latent (Open-Sora), or on its mean "
        "(for a VAE trained on posterior means, whose posterior std the KL alone sets)",
    )
    compile: bool = Field(False, description="torch.compile the model (GPU: ~1.7x a step)")
    eval: DiffusionEvalParams = Field(
        default_factory=DiffusionEvalParams, description="held-out evaluation"
    )
    resume: bool = Field(
        True, description="continue from the run folder's latest checkpoint (false: start afresh)"
    )
    force_resume: bool = Field(
        False, description="resume even if the training table changed since the checkpoint"
    )
    probe: ProbeParams = Field(
        default_factory=ProbeParams, description="the batch-size probe of this stage"
    )
    lora: LoraParams | None = Field(
        None, description="train LoRA adapters instead of every weight (null: full training)"
    )

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        issues = []
        if self.is_causal_vae:
            issues += bucket_frame_issues(
                self.bucket_config, "a causal VAE needs 4k+1 frames", lambda t: (t - 1) % 4 == 0
            )
        if self.condition_config is not None and sum(self.condition_config.values()) <= 0:
            issues.append((("condition_config",), self.condition_config, "weights must sum to > 0"))
        if self.use_cosine_scheduler and (self.max_steps or 0) <= self.warmup_steps:
            rule = "the cosine decays over max_steps: set max_steps above warmup_steps"
            issues.append((("use_cosine_scheduler",), True, rule))
        world = context.get("world_size", 1)
        issues += plugin_issues(self.plugin, self.plugin_config, self.model.num_heads, world)
        return issues + weight_sharding_issues(self.plugin_config)

    def all_input_paths(self) -> list[tuple[tuple, str]]:
        # Training reads captions from the embedding cache: t5 / clip name the encoders
        # that made it (for the record) and are not loaded by the stage.
        return [(path, value) for path, value in super().all_input_paths()
                if path[0] not in ("t5", "clip")]  # fmt: skip
