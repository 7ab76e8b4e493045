"""VAE training (Open-Sora's video_dc_ae)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from opensora_kedro.models.params import VaeModelParams
from opensora_kedro.params import (
    NonNegativeInt,
    Params,
    PositiveInt,
    Probability,
    bucket_frame_issues,
)
from opensora_kedro.runtime.params import plugin_issues, weight_sharding_issues
from opensora_kedro.training.params import LoopParams

if TYPE_CHECKING:
    pass


class VaeLossParams(Params):
    """Weights of the reconstruction loss terms."""

    perceptual_loss_weight: Annotated[float, Field(ge=0)] = Field(0.5, description="LPIPS weight")
    kl_loss_weight: Annotated[float, Field(ge=0)] = Field(0.0, description="KL weight")
    l2_loss_weight: Annotated[float, Field(ge=0)] = Field(
        0.0, description="squared-error weight (not Open-Sora's; helps when LPIPS is off)"
    )
    l1_loss_weight: Annotated[float, Field(ge=0)] = Field(
        1.0, description="L1 weight (Open-Sora: 1)"
    )
    perceptual_weights_path: str | None = Field(
        None, description="local LPIPS weights (safetensors); none: the term is off, with a warning"
    )


class LrSchedulerParams(Params):
    """Learning-rate schedule."""

    warmup_steps: NonNegativeInt = Field(0, description="linear warm-up steps")


class VaeEvalParams(Params):
    """Reconstruction quality on clips kept out of training."""

    holdout_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="share of clips (by path hash) kept out of training for evaluation"
    )
    max_clips: PositiveInt = Field(16, description="held-out clips evaluated")
    images: NonNegativeInt = Field(2, description="side-by-side reconstruction images logged")


class VaeTrainingParams(LoopParams):
    """Training the video autoencoder."""

    extends: str | None = Field(None, description="the config this one inherits from")
    model: VaeModelParams = Field(description="the autoencoder")
    lr_scheduler: LrSchedulerParams = Field(description="learning-rate schedule")
    mixed_strategy: Literal["mixed_video_image", "mixed_video_random"] | None = Field(
        "mixed_video_image", description="mix single frames into video batches"
    )
    mixed_image_ratio: Probability = Field(0.2, description="share of image samples when mixing")
    grad_checkpoint: bool = Field(False, description="gradient checkpointing ('auto' allowed)")
    epochs: PositiveInt = Field(100, description="passes over the data")
    ckpt_every: PositiveInt = Field(3000, description="steps between checkpoints")
    keep_n_latest: PositiveInt = Field(50, description="checkpoints kept on disk")
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = Field(0.99, description="EMA decay")
    vae_loss_config: VaeLossParams = Field(description="loss weights")
    eval: VaeEvalParams = Field(default_factory=VaeEvalParams, description="held-out evaluation")
    sample_posterior: bool = Field(
        True, description="train on posterior samples (Open-Sora) rather than its mean"
    )
    lora: None = Field(None, description="LoRA is built for the diffusion model only")

    @property
    def warmup(self) -> int:
        return self.lr_scheduler.warmup_steps

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        issues = []
        vae = self.model.meta_model()
        if vae is not None:
            rule = f"{self.model.type} encodes {vae.num_frames_rule} frames"
            issues += bucket_frame_issues(self.bucket_config, rule, vae.valid_num_frames)
            image_steps = self.mixed_strategy == "mixed_video_image" and self.mixed_image_ratio > 0
            if image_steps and not vae.valid_num_frames(1):
                rule = f"image steps need single frames; {rule} (set 0)"
                issues.append((("mixed_image_ratio",), self.mixed_image_ratio, rule))
        issues += weight_sharding_issues(self.plugin_config)
        return issues + plugin_issues(
            self.plugin, self.plugin_config, None, context.get("world_size", 1)
        )
