"""Video generation (brief §8): prompts -> text embeddings -> seeded noise -> guided denoising
-> VAE decode -> uint8 frames; t2i2v; saving samples (models load in
:mod:`opensora_kedro.models.loading`).

Open-Sora's ``scripts/diffusion/inference.py`` as a library: no Kedro here. The settings come
from the (resolved) ``inference`` parameter group, see :meth:`SamplingSettings.from_inference`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from opensora_kedro.data.clip_dataset import to_clip_tensor
from opensora_kedro.diffusion.denoiser import denoise, sampling_timesteps, seeded_noise
from opensora_kedro.files import write_atomic
from opensora_kedro.models.loading import GenerationModels, TextEncoders
from opensora_kedro.models.vae.base import VideoAutoencoder
from opensora_kedro.progress import progress
from opensora_kedro.sampling.references import Reference, build_conditions
from opensora_kedro.sampling.settings import (
    SamplingSettings,
    check_num_frames,
    final_prompts,
    target_size,
)
from opensora_kedro.video.codec import encode_mp4

logger = logging.getLogger(__name__)

# Open-Sora's t2i stage (``modify_option_to_t2i``): guidance 4.0 for the guidance-distilled
# image model, passed as its guidance embedding.
T2I_DISTILLED_GUIDANCE = 4.0


# --------------------------------------------------------------------------- sampling


def _place(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def _noise(shape: Sequence[int], seeds: Sequence[int], like: Tensor) -> Tensor:
    # One generator per sample, on the CPU: a seed gives the same video whatever the batch
    # composition, batch size or device.
    return torch.cat([seeded_noise((1, *shape), s) for s in seeds]).to(like.device, like.dtype)


@torch.no_grad()
def denoise_distilled(
    model: nn.Module, noise: Tensor, txt: Tensor, y: Tensor, timesteps: Tensor,
    guidance: float, cond: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Open-Sora's ``DISTILLED`` sampler: one forward per step, the guidance scale passed to a
    guidance-embedding model instead of classifier-free guidance."""
    ts = timesteps.tolist()
    b = noise.shape[0]
    g = torch.full((b,), guidance, device=noise.device, dtype=noise.dtype)
    x = noise
    for t_curr, t_next in zip(ts[:-1], ts[1:], strict=True):
        t_vec = torch.full((b,), t_curr, device=x.device, dtype=x.dtype)
        x = x + (t_next - t_curr) * model(x, txt, y, t_vec, cond=cond, guidance=g)
    return x


def _check_vae(vae: VideoAutoencoder, settings: SamplingSettings) -> None:
    if (vae.temporal_compression, vae.is_causal) != (
        settings.temporal_reduction,
        settings.is_causal_vae,
    ):
        raise ValueError(
            f"sampling_option says temporal_reduction={settings.temporal_reduction}, "
            f"is_causal_vae={settings.is_causal_vae}; the VAE has "
            f"{vae.temporal_compression}, {vae.is_causal}"
        )


def generate_latents(
    model: nn.Module,
    vae: VideoAutoencoder,
    encoders: TextEncoders,
    prompts: Sequence[str],
    settings: SamplingSettings,
    seeds: Sequence[int],
    refs: Sequence[Reference | Sequence[Reference] | None] | None = None,
    cond_type: str | None = None,
) -> Tensor:
    """Denoised latents ``[B, C, T, h, w]`` for one batch of (already suffixed) prompts."""
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    cond_type = cond_type or settings.cond_type
    check_num_frames(settings.num_frames, vae.temporal_compression, vae.is_causal)
    device, dtype = _place(model)
    size = target_size(
        settings.resolution, settings.aspect_ratio, vae.spatial_compression, settings.patch_size
    )
    shape = (vae.latent_channels, *vae.latent_shape(settings.num_frames, *size))
    txt, y = (e.to(device, dtype) for e in encoders.embed(prompts))
    null_txt, null_y = (e.to(device, dtype) for e in encoders.embed([settings.negative_prompt]))
    noise = _noise(shape, seeds, txt)
    cond = build_conditions(vae, refs, cond_type, settings.num_frames, size, len(prompts))
    cond = None if cond is None else cond.to(device, dtype)
    timesteps = sampling_timesteps(
        settings.num_steps, shape[2:], shape[1], settings.patch_size, settings.shift,
        settings.flow_shift,
    )  # fmt: skip
    logger.debug("sampling %d x %s (%s, %d steps)", len(prompts), shape, cond_type,
                 settings.num_steps)  # fmt: skip
    if settings.method == "distill":
        return denoise_distilled(model, noise, txt, y, timesteps, settings.guidance, cond)
    return denoise(
        model, noise, txt, y, null_txt, null_y, timesteps, settings.guidance,
        settings.guidance_img, cond, text_osci=settings.text_osci,
        image_osci=settings.image_osci,
        # Open-Sora ramps the image guidance over time for i2v types only.
        scale_temporal_osci=settings.scale_temporal_osci and "i2v" in cond_type,
        pin_condition_every_step=settings.pin_condition_every_step,
    )  # fmt: skip


@torch.no_grad()
def decode_videos(vae: VideoAutoencoder, latents: Tensor, num_frames: int) -> list[np.ndarray]:
    """VAE-decode ``latents`` -> one uint8 ``[T, H, W, 3]`` array per sample."""
    device, dtype = _place(vae)
    videos = vae.decode(latents.to(device, dtype))[:, :, :num_frames].float()
    pixels = ((videos.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [v.permute(1, 2, 3, 0).cpu().numpy() for v in pixels]


def generate(
    model: nn.Module,
    vae: VideoAutoencoder,
    encoders: TextEncoders,
    prompts: Sequence[str],
    settings: SamplingSettings,
    seeds: Sequence[int],
    refs: Sequence[Reference | Sequence[Reference] | None] | None = None,
    cond_type: str | None = None,
) -> list[np.ndarray]:
    """Generate one video per prompt -> uint8 ``[T, H, W, 3]`` arrays.

    Args:
        model: the MMDiT (its device and dtype are used).
        vae: the video autoencoder.
        encoders: T5 and CLIP.
        prompts: raw prompts; the fps / motion-score suffix is added here.
        settings: see :class:`SamplingSettings`.
        seeds: one per prompt; the same seed gives the same video.
        refs: one reference per prompt (path, ``"a;b"``, frames array, or None) for i2v/v2v.
        cond_type: overrides ``settings.cond_type``.

    Raises:
        ValueError: bad ``num_frames``, seeds/refs count, or a missing / short reference.
    """
    _check_vae(vae, settings)
    texts = final_prompts(prompts, settings)
    videos: list[np.ndarray] = []
    with progress(total=len(texts), desc="generating", unit="video") as bar:
        for start in range(0, len(texts), settings.batch_size):
            stop = start + settings.batch_size
            latents = generate_latents(
                model, vae, encoders, texts[start:stop], settings, seeds[start:stop],
                None if refs is None else refs[start:stop], cond_type,
            )  # fmt: skip
            videos += decode_videos(vae, latents, settings.num_frames)
            bar.update(len(texts[start:stop]))
    return videos


# --------------------------------------------------------------------------- t2i2v


def generate_images(
    image_model: nn.Module,
    image_vae: VideoAutoencoder,
    encoders: TextEncoders,
    prompts: Sequence[str],
    settings: SamplingSettings,
    seeds: Sequence[int],
) -> list[np.ndarray]:
    """The t2i stage: one uint8 ``[H, W, 3]`` image per prompt at ``img_resolution``.

    A guidance-embedding (distilled) image model is sampled as Open-Sora samples flux-dev
    (one pass per step, guidance 4.0); any other gets ordinary classifier-free guidance with
    ``settings.guidance``.
    """
    image = settings.for_image()
    if getattr(getattr(image_model, "config", None), "guidance_embed", False):
        image = dataclasses.replace(image, method="distill", guidance=T2I_DISTILLED_GUIDANCE)
    # Open-Sora runs the image stage before it adds the fps / motion suffix: raw prompts.
    texts = list(prompts)
    frames: list[np.ndarray] = []
    with progress(total=len(texts), desc="generating images", unit="image") as bar:
        for start in range(0, len(texts), settings.batch_size):
            stop = start + settings.batch_size
            latents = generate_latents(
                image_model, image_vae, encoders, texts[start:stop], image, seeds[start:stop]
            )
            frames += [video[0] for video in decode_videos(image_vae, latents, 1)]
            bar.update(len(texts[start:stop]))
    return frames


def fit_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize(-crop) a uint8 ``[H, W, 3]`` image to ``size`` -> uint8 ``[1, H', W', 3]``."""
    if image.shape[:2] == tuple(size):
        return image[None]
    clip = to_clip_tensor(image[None], size, "resize_crop")  # [3, 1, H', W'] in [-1, 1]
    pixels = ((clip + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).numpy()


def generate_t2i2v(
    model: nn.Module,
    vae: VideoAutoencoder,
    image_model: nn.Module,
    image_vae: VideoAutoencoder,
    encoders: TextEncoders,
    prompts: Sequence[str],
    settings: SamplingSettings,
    seeds: Sequence[int],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Text -> first frame (image model) -> video (``i2v_head`` on that frame).

    Returns:
        ``(videos, images)``: the uint8 videos and the generated first frames at
        ``img_resolution`` (Open-Sora saves them as ``generated_condition/*.png``).
    """
    images = generate_images(image_model, image_vae, encoders, prompts, settings, seeds)
    size = target_size(
        settings.resolution, settings.aspect_ratio, vae.spatial_compression, settings.patch_size
    )
    refs = [fit_image(image, size) for image in images]
    videos = generate(model, vae, encoders, prompts, settings, seeds, refs, "i2v_head")
    return videos, images


def generate_samples(
    models: GenerationModels,
    prompts: Sequence[str],
    settings: SamplingSettings,
    seeds: Sequence[int],
    refs: Sequence[Reference | Sequence[Reference] | None] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """:func:`generate_t2i2v` when ``settings.use_t2i2v``, else :func:`generate` ->
    ``(videos, t2i images or None)``."""
    if not settings.use_t2i2v:
        videos = generate(models.model, models.vae, models.encoders, prompts, settings, seeds, refs)
        return videos, None
    if models.image_model is None or models.image_vae is None:
        raise ValueError("use_t2i2v needs the image model and its autoencoder")
    return generate_t2i2v(
        models.model, models.vae, models.image_model, models.image_vae, models.encoders,
        prompts, settings, seeds,
    )  # fmt: skip


# --------------------------------------------------------------------------- saving


def save_sample(
    frames: np.ndarray, prompt: str, folder: str | os.PathLike, stem: str, fps: float
) -> tuple[Path, Path]:
    """Write ``<stem>.mp4`` (H.264) and ``<stem>.txt`` (the final prompt) into ``folder``,
    each atomically (temporary file, then rename) -> ``(mp4 path, txt path)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video, text = folder / f"{stem}.mp4", folder / f"{stem}.txt"
    write_atomic(video, encode_mp4(frames, fps))
    write_atomic(text, prompt.encode("utf-8"))
    return video, text
