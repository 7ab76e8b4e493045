"""The sampler's settings, and what follows from them alone: frame counts a VAE can decode,
the latent size, seeds, the final prompts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from opensora_kedro.config.schemas.inference import InferenceParams
from opensora_kedro.data.aspect import image_size
from opensora_kedro.sampling.prompts import add_inference_suffix


@dataclass(frozen=True)
class SamplingSettings:
    """Everything :func:`generate` needs besides the models, prompts and seeds.

    The sampler's own flat settings, as :class:`~opensora_kedro.models.mmdit.MMDiTConfig` is
    the model's: they gather what an ``inference`` group keeps in three places
    (``sampling_option``, the group's seed / batch / prompt-suffix fields, the model's patch)
    with knobs no parameter names (``flow_shift``, ``negative_prompt``,
    ``pin_condition_every_step``), derive the t2i stage's variant (:meth:`for_image`), and are
    built directly where no whole inference group exists (tests).
    """

    resolution: str = "256px"
    aspect_ratio: str = "16:9"
    num_frames: int = 129
    num_steps: int = 50
    shift: bool = True
    flow_shift: float | None = None
    temporal_reduction: int = 4
    is_causal_vae: bool = True
    guidance: float = 7.5
    guidance_img: float = 3.0
    text_osci: bool = True
    image_osci: bool = True
    scale_temporal_osci: bool = True
    method: str = "i2v"
    seed: int = 42
    batch_size: int = 1
    cond_type: str = "t2v"
    motion_score: int | str | None = "4"
    suffix_style: str = "opensora"  # or "training": the training captions' suffix form
    fps_save: int = 24
    patch_size: int = 2
    dtype: str = "bf16"
    use_t2i2v: bool = False
    img_resolution: str | None = None
    negative_prompt: str = ""
    # Ours: keep the conditioned frames clean at every step (Open-Sora: only at the end).
    pin_condition_every_step: bool = True

    @classmethod
    def from_inference(cls, params: InferenceParams) -> SamplingSettings:
        """The sampler's settings of an ``inference`` parameter group (``extends`` resolved):
        its ``sampling_option`` (``seed`` null: the group's ``seed``), ``batch_size``,
        ``cond_type``, ``motion_score``, ``suffix_style``, ``fps_save``, ``dtype``,
        ``use_t2i2v``, ``img_resolution`` and ``model.patch_size``; the settings the
        parameters do not name keep their defaults.

        Raises:
            ValueError: ``num_frames`` the configured VAE cannot decode.
        """
        option = params.sampling_option
        settings = cls(
            resolution=option.resolution,
            aspect_ratio=option.aspect_ratio,
            num_frames=option.num_frames,
            num_steps=option.num_steps,
            shift=option.shift,
            temporal_reduction=option.temporal_reduction,
            is_causal_vae=option.is_causal_vae,
            guidance=option.guidance,
            guidance_img=option.guidance_img,
            text_osci=option.text_osci,
            image_osci=option.image_osci,
            scale_temporal_osci=option.scale_temporal_osci,
            method=option.method,
            seed=params.seed if option.seed is None else option.seed,
            batch_size=params.batch_size,
            cond_type=params.cond_type,
            motion_score=params.motion_score,
            suffix_style=params.suffix_style,
            fps_save=params.fps_save,
            patch_size=params.model.patch_size,
            dtype=params.dtype,
            use_t2i2v=params.use_t2i2v,
            img_resolution=params.img_resolution,
        )
        # The schema checks 4k+1 for a causal VAE of 4x; this, any temporal_reduction.
        check_num_frames(settings.num_frames, settings.temporal_reduction, settings.is_causal_vae)
        return settings

    def for_image(self) -> SamplingSettings:
        """The t2i stage of t2i2v: one frame at ``img_resolution``, text-to-image."""
        return dataclasses.replace(
            self,
            resolution=self.img_resolution or self.resolution,
            num_frames=1,
            cond_type="t2v",
            use_t2i2v=False,
        )


def check_num_frames(num_frames: int, temporal_reduction: int = 4, causal: bool = True) -> None:
    """Raise a ValueError unless a VAE of that kind can decode exactly ``num_frames`` frames."""
    if num_frames == 1:
        return
    if causal and (num_frames - 1) % temporal_reduction:
        raise ValueError(
            f"num_frames must be {temporal_reduction}k+1 for a causal VAE with temporal "
            f"compression {temporal_reduction} (e.g. 17, 33, 129), got {num_frames}"
        )
    if not causal and num_frames % temporal_reduction:
        raise ValueError(
            f"num_frames must be a multiple of {temporal_reduction} for a non-causal VAE, "
            f"got {num_frames}"
        )


def target_size(
    resolution: str, aspect_ratio: str, spatial_compression: int = 8, patch_size: int = 2
) -> tuple[int, int]:
    """``(H, W)`` of a resolution name and ``w:h`` ratio (Open-Sora's ``get_image_size`` on
    the inference table), rounded up to multiples of ``spatial_compression * patch_size`` so
    every latent patch is whole (Open-Sora's ``sanitize_sampling_option``)."""
    d = spatial_compression * patch_size
    height, width = image_size(resolution, aspect_ratio, d, training=False)
    return -(-height // d) * d, -(-width // d) * d


def sample_seeds(settings: SamplingSettings, num_prompts: int, sample_index: int = 0) -> list[int]:
    """Open-Sora's seeds: ``seed + k`` for the k-th sample of every prompt."""
    return [settings.seed + sample_index] * num_prompts


# --------------------------------------------------------------------------- text


def final_prompts(prompts: Sequence[str], settings: SamplingSettings) -> list[str]:
    """The prompts as the model reads them: with the fps and motion-score suffix in
    ``settings.suffix_style``."""
    return add_inference_suffix(
        list(prompts), settings.fps_save, settings.motion_score, settings.suffix_style
    )
