"""Loading what generation runs on: the MMDiT(s), the VAE(s) and the text encoders an
``inference`` parameter group names (relative paths from ``base_dir``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from opensora_kedro.config.schemas.inference import InferenceParams
from opensora_kedro.files import resolve_path
from opensora_kedro.models.mmdit_loading import load_mmdit
from opensora_kedro.models.vae.base import VideoAutoencoder
from opensora_kedro.models.vae.loading import load_autoencoder, load_image_autoencoder
from opensora_kedro.text.embedder import TextEmbedder, resolve_device, resolve_dtype
from opensora_kedro.text.params import TextEncoderParams

logger = logging.getLogger(__name__)


@dataclass
class TextEncoders:
    """The T5 (tokens) and CLIP (pooled vector) encoders."""

    t5: TextEmbedder
    clip: TextEmbedder

    def embed(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(txt [B, L, D], y [B, D'])`` on the CPU."""
        return self.t5.encode(texts), self.clip.encode(texts)


@dataclass
class GenerationModels:
    """What :func:`generate` / :func:`generate_t2i2v` run on."""

    model: nn.Module
    vae: VideoAutoencoder
    encoders: TextEncoders
    image_model: nn.Module | None = None
    image_vae: VideoAutoencoder | None = None


def load_text_encoders(
    params: InferenceParams, device: str = "cpu", base_dir: str | os.PathLike | None = None
) -> TextEncoders:
    """T5 and CLIP of ``params.t5`` / ``params.clip`` (``from_pretrained``, ``max_length``,
    ``local_files_only``, ``cache_dir``) in ``params.dtype``."""

    def load(role: str, spec: TextEncoderParams) -> TextEmbedder:
        source = spec.from_pretrained
        # A hub name stays as it is; a relative folder is taken from base_dir.
        local = resolve_path(source, base_dir)
        return TextEmbedder(
            role,
            local if local.is_dir() else source,
            spec.max_length,
            dtype=params.dtype,
            device=device,
            local_files_only=spec.local_files_only,
            cache_dir=spec.cache_dir,
        )

    return TextEncoders(load("t5", params.t5), load("clip", params.clip))


def load_generation_models(
    params: InferenceParams, device: str = "auto", base_dir: str | os.PathLike | None = None
) -> GenerationModels:
    """Load the models an ``inference`` parameter group names (relative paths from
    ``base_dir``, else the working directory): ``model``, ``ae``, ``t5``, ``clip`` in
    ``dtype`` and, with ``use_t2i2v``, ``img_flux`` and ``img_flux_ae``."""
    torch_device = resolve_device(device)
    dtype = resolve_dtype(params.dtype, torch_device)
    encoders = load_text_encoders(params, str(torch_device), base_dir)
    models = GenerationModels(
        load_mmdit(params.model, torch_device, dtype, base_dir),
        load_autoencoder(params.ae, torch_device, dtype, base_dir),
        encoders,
    )
    if params.use_t2i2v:
        if params.img_flux is None or not params.img_flux_ae:
            raise ValueError("use_t2i2v needs img_flux and img_flux_ae")
        models.image_model = load_mmdit(params.img_flux, torch_device, dtype, base_dir)
        models.image_vae = load_image_autoencoder(params.img_flux_ae, torch_device, dtype, base_dir)
    logger.info("loaded generation models on %s (%s)", torch_device, dtype)
    return models
