"""VAE training (Open-Sora's video_dc_ae)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from opensora_kedro.config.schemas.common import (
    BucketConfig,
    Dtype,
    NonNegativeInt,
    OptimizerParams,
    Params,
    PluginConfigParams,
    PluginName,
    PositiveInt,
    Probability,
    bucket_frame_issues,
    plugin_issues,
)
from opensora_kedro.config.schemas.diffusion import VideoDatasetParams


class VaeModelParams(Params):
    """The autoencoder being trained."""

    type: Literal["dc_ae", "hunyuan_vae", "tiny_vae"] = Field(description="registered VAE type")
    model_name: str | None = Field(None, description="named configuration, e.g. dc-ae-f32t4c128")
    from_scratch: bool = Field(True, description="initialise randomly")
    from_pretrained: str | None = Field(None, description="checkpoint to start from")
    latent_channels: PositiveInt | None = Field(None, description="latent channels (tiny_vae)")
    base_channels: PositiveInt | None = Field(None, description="first-level width (tiny_vae)")
    spatial_compression: PositiveInt | None = Field(None, description="pixels per latent side")
    temporal_compression: PositiveInt | None = Field(None, description="frames per latent frame")
    is_causal: bool = Field(False, description="causal in time: frame counts are 4k+1")


class VaeLossParams(Params):
    """Weights of the reconstruction loss terms."""

    perceptual_loss_weight: Annotated[float, Field(ge=0)] = Field(0.5, description="LPIPS weight")
    kl_loss_weight: Annotated[float, Field(ge=0)] = Field(0.0, description="KL weight")


class LrSchedulerParams(Params):
    """Learning-rate schedule."""

    warmup_steps: NonNegativeInt = Field(0, description="linear warm-up steps")


class VaeTrainingParams(Params):
    """Training the video autoencoder."""

    extends: str | None = Field(None, description="the config this one inherits from")
    model: VaeModelParams = Field(description="the autoencoder")
    dataset: VideoDatasetParams = Field(description="training data")
    bucket_config: BucketConfig = Field(description="{resolution: {num_frames: [prob, batch]}}")
    num_bucket_build_workers: PositiveInt = Field(64, description="processes building buckets")
    num_workers: NonNegativeInt = Field(12, description="data-loader worker processes")
    prefetch_factor: PositiveInt | None = Field(2, description="batches prefetched per worker")
    optim: OptimizerParams = Field(description="optimizer")
    lr_scheduler: LrSchedulerParams = Field(description="learning-rate schedule")
    mixed_strategy: Literal["mixed_video_image", "mixed_video_random"] | None = Field(
        "mixed_video_image", description="mix single frames into video batches"
    )
    mixed_image_ratio: Probability = Field(0.2, description="share of image samples when mixing")
    dtype: Dtype = Field("bf16", description="training precision ('auto': from the hardware)")
    plugin: PluginName = Field("zero2", description="ColossalAI Booster plugin")
    plugin_config: PluginConfigParams = Field(description="plugin settings")
    grad_clip: Annotated[float, Field(gt=0)] | None = Field(1.0, description="max grad norm")
    grad_checkpoint: bool = Field(False, description="gradient checkpointing ('auto' allowed)")
    batch_size_scale: Annotated[float, Field(gt=0)] = Field(
        1.0, description="multiplies every bucket batch size ('auto': from GPU memory)"
    )
    seed: int = Field(42, description="seed")
    epochs: PositiveInt = Field(100, description="passes over the data")
    max_steps: PositiveInt | None = Field(None, description="stop after this many updates")
    log_every: PositiveInt = Field(10, description="steps between metric logs")
    ckpt_every: PositiveInt = Field(3000, description="steps between checkpoints")
    keep_n_latest: PositiveInt = Field(50, description="checkpoints kept on disk")
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = Field(0.99, description="EMA decay")
    update_warmup_steps: bool = Field(True, description="count warm-up in optimizer updates")
    vae_loss_config: VaeLossParams = Field(description="loss weights")

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        if self.model.is_causal:
            issues = bucket_frame_issues(
                self.bucket_config, "a causal VAE needs 4k+1 frames", lambda t: (t - 1) % 4 == 0
            )
        else:
            step = self.model.temporal_compression or 4
            issues = bucket_frame_issues(
                self.bucket_config,
                f"must be 1 or a multiple of the temporal compression {step}",
                lambda t: t == 1 or t % step == 0,
            )
        return issues + plugin_issues(
            self.plugin, self.plugin_config, None, context.get("world_size", 1)
        )
