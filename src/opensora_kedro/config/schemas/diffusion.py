"""Diffusion training stages (image, stage1, stage2, stage1_i2v, stage2_i2v)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from opensora_kedro.models.params import AutoencoderParams, MMDiTParams
from opensora_kedro.params import (
    NonNegativeInt,
    Params,
    PositiveInt,
    Probability,
    bucket_frame_issues,
)
from opensora_kedro.runtime.params import plugin_issues, weight_sharding_issues
from opensora_kedro.text.params import TextEncoderParams
from opensora_kedro.training.params import LoopParams

CondType = Literal["t2v", "i2v_head", "i2v_tail", "i2v_loop", "v2v_head", "v2v_tail"]


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


class DiffusionStageParams(LoopParams):
    """One diffusion training stage; a stage states only what differs from the one it extends."""

    extends: str | None = Field(None, description="the stage this one inherits from")
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
    warmup_steps: NonNegativeInt = Field(0, description="linear learning-rate warm-up steps")
    use_cosine_scheduler: bool = Field(
        False, description="after warm-up, decay the LR to 0 by a cosine over max_steps"
    )
    condition_config: dict[CondType, Annotated[float, Field(ge=0)]] | None = Field(
        None, description="weights of the conditioning types drawn per sample (null: t2v)"
    )
    sigma_min: Annotated[float, Field(ge=0, lt=1)] = Field(1e-5, description="rectified-flow σ_min")
    sample_posterior: bool = Field(
        True,
        description="train on a posterior sample of each latent (Open-Sora), or on its mean "
        "(for a VAE trained on posterior means, whose posterior std the KL alone sets)",
    )
    eval: DiffusionEvalParams = Field(
        default_factory=DiffusionEvalParams, description="held-out evaluation"
    )
    probe: ProbeParams = Field(
        default_factory=ProbeParams, description="the batch-size probe of this stage"
    )

    @property
    def warmup(self) -> int:
        return self.warmup_steps

    @property
    def cosine_decay(self) -> bool:
        return self.use_cosine_scheduler

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
