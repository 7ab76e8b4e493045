"""VAE training (Open-Sora's video_dc_ae)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from opensora_kedro.config.schemas.common import (
    BucketConfigTree,
    Dtype,
    NonNegativeInt,
    OptimizerParams,
    Params,
    PluginConfigParams,
    PluginName,
    PositiveInt,
    PretrainedWeights,
    Probability,
    TrainingSamplesParams,
    VaeType,
    bucket_frame_issues,
    plugin_issues,
    weight_sharding_issues,
)
from opensora_kedro.config.schemas.diffusion import VideoDatasetParams

if TYPE_CHECKING:
    from opensora_kedro.models.vae.base import VideoAutoencoder


class VaeModelParams(PretrainedWeights, Params):
    """The autoencoder being trained: a registered type and size, with field overrides."""

    type: VaeType = Field(description="registered VAE (models/vae/registry.py)")
    from_scratch: bool = Field(True, description="initialise randomly, ignoring from_pretrained")
    from_pretrained: str | None = Field(None, description="safetensors weights to start from")
    config: dict[str, Any] = Field(
        default_factory=dict, description="config fields of the type to override"
    )

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        import dataclasses

        from opensora_kedro.config.validate import suggest
        from opensora_kedro.models.vae.registry import vae_config

        known = [f.name for f in dataclasses.fields(vae_config(self.type))]
        unknown = [name for name in self.config if name not in known]
        if unknown:  # each at its own key, so the file (or --params) that set it is named
            return [
                (("config", name), self.config[name],
                 f"unknown config field for VAE type {self.type!r}"
                 + (f"; did you mean '{close}'?" if (close := suggest(name, known)) else ""))
                for name in unknown
            ]  # fmt: skip
        try:
            vae_config(self.type, **self.config)
        except (ValueError, TypeError) as error:
            return [(("config",), self.config, str(error))]
        return []

    def meta_model(self) -> VideoAutoencoder | None:
        """The configured model built on the meta device (no memory, no time): its frame
        rules. None when the config does not build (``cross_checks`` reports why)."""
        import torch

        from opensora_kedro.models.vae.registry import build_vae

        try:
            with torch.device("meta"):
                return build_vae(self.type, **self.config)
        except (ValueError, TypeError):
            return None


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


class VaeTrainingParams(Params):
    """Training the video autoencoder."""

    # Its job runs on launched workers, which resolve its `auto` keys again (config.hardware).
    RESOLVED_ON_WORKERS: ClassVar[bool] = True

    extends: str | None = Field(None, description="the config this one inherits from")
    model: VaeModelParams = Field(description="the autoencoder")
    dataset: VideoDatasetParams = Field(description="training data")
    bucket_config: BucketConfigTree = Field(description="{resolution: {num_frames: [prob, batch]}}")
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
    log_every: PositiveInt | None = Field(
        None, description="updates between metric logs (null: max_steps / 100, at least 1)"
    )
    ckpt_every: PositiveInt = Field(3000, description="steps between checkpoints")
    samples: TrainingSamplesParams = Field(
        default_factory=TrainingSamplesParams, description="samples during training (MLflow)"
    )
    keep_n_latest: PositiveInt = Field(50, description="checkpoints kept on disk")
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = Field(0.99, description="EMA decay")
    vae_loss_config: VaeLossParams = Field(description="loss weights")
    eval: VaeEvalParams = Field(default_factory=VaeEvalParams, description="held-out evaluation")
    resume: bool = Field(True, description="continue from the run folder's latest checkpoint")
    force_resume: bool = Field(
        False, description="resume even if the training table changed since the checkpoint"
    )
    sample_posterior: bool = Field(
        True, description="train on posterior samples (Open-Sora) rather than its mean"
    )

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
