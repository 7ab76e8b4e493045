"""What every training group (diffusion stages, the VAE) gives the shared training loop and
its data: optimizer, samples, training clips, LoRA, and the loop's settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from opensora_kedro.params import (
    BucketConfigTree,
    Dtype,
    NonNegativeInt,
    Params,
    PositiveInt,
    Probability,
)
from opensora_kedro.runtime.params import (
    PluginConfigParams,
    PluginName,
    WorkerJobParams,
)

# Every linear layer of the attention and MLP paths of both block kinds (not the embedders,
# the modulation or the output layer). Fused-qkv models name their projection "qkv".
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "img_proj", "txt_proj", "img_mlp.0",
                   "img_mlp.2", "txt_mlp.0", "txt_mlp.2", "mlp_in", "linear2")  # fmt: skip


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


POINTS_PER_RUN = 100  # metric points a run logs when log_every is left to the loop


LOG_EVERY_WITHOUT_MAX_STEPS = 10


class LoopParams(WorkerJobParams):
    """The shared loop's settings and the training data's; the defaults are the diffusion
    stages' (the VAE's differ where its schema says so)."""

    dataset: VideoDatasetParams = Field(description="training data")
    bucket_config: BucketConfigTree = Field(
        description="{resolution: {num_frames: [probability, batch_size per GPU]}}"
    )
    optim: OptimizerParams = Field(description="optimizer")
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
    compile: bool = Field(False, description="torch.compile the model (GPU: ~1.7x a step)")
    resume: bool = Field(
        True, description="continue from the run folder's latest checkpoint (false: start afresh)"
    )
    force_resume: bool = Field(
        False, description="resume even if the training table changed since the checkpoint"
    )
    lora: LoraParams | None = Field(
        None, description="train LoRA adapters instead of every weight (null: full training)"
    )

    @property
    def log_interval(self) -> int:
        """``log_every``, or when unset every ``max_steps / 100`` updates (at least 1) so a
        run of any length draws a curve of about 100 points (10 without max_steps)."""
        if self.log_every:
            return self.log_every
        if not self.max_steps:
            return LOG_EVERY_WITHOUT_MAX_STEPS
        return max(1, self.max_steps // POINTS_PER_RUN)

    @property
    def warmup(self) -> int:
        """Linear learning-rate warm-up updates (each group says where it keeps them)."""
        return 0

    @property
    def cosine_decay(self) -> bool:
        """Whether the learning rate decays to 0 by a cosine over ``max_steps``."""
        return False
