"""Loading what generation runs on: the MMDiT(s), the VAE(s) and the text encoders an
``inference`` parameter group names (relative paths from ``base_dir``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from opensora_kedro.files import resolve_path
from opensora_kedro.models.mmdit_loading import load_mmdit
from opensora_kedro.models.vae.base import VideoAutoencoder
from opensora_kedro.models.vae.loading import load_autoencoder
from opensora_kedro.text.embedder import TextEmbedder, resolve_device, resolve_dtype

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
    params: Mapping[str, Any], device: str = "cpu", base_dir: str | os.PathLike | None = None
) -> TextEncoders:
    """T5 and CLIP from ``params["t5"]`` / ``params["clip"]`` (``from_pretrained``,
    ``max_length``, ``local_files_only``, ``cache_dir``) in ``params["dtype"]``."""

    def load(role: str) -> TextEmbedder:
        spec = params[role]
        source = spec["from_pretrained"]
        # A hub name stays as it is; a relative folder is taken from base_dir.
        local = resolve_path(source, base_dir)
        return TextEmbedder(
            role,
            local if local.is_dir() else source,
            spec["max_length"],
            dtype=params.get("dtype", "bf16"),
            device=device,
            local_files_only=spec.get("local_files_only", True),
            cache_dir=spec.get("cache_dir"),
        )

    return TextEncoders(load("t5"), load("clip"))


def load_generation_models(
    params: Mapping[str, Any], device: str = "auto", base_dir: str | os.PathLike | None = None
) -> GenerationModels:
    """Load the models an ``inference`` parameter group names (relative paths from
    ``base_dir``, else the working directory). Reads ``dtype``, ``model``, ``ae``, ``t5``,
    ``clip`` and, with ``use_t2i2v``, ``img_flux`` and ``img_flux_ae``."""
    torch_device = resolve_device(device)
    dtype_name = params.get("dtype", "bf16")
    dtype = resolve_dtype(dtype_name, torch_device)
    encoders = load_text_encoders(params, str(torch_device), base_dir)
    models = GenerationModels(
        load_mmdit(params["model"], torch_device, dtype, base_dir),
        load_autoencoder(params["ae"], torch_device, dtype, base_dir),
        encoders,
    )
    if params.get("use_t2i2v"):
        if not params.get("img_flux") or not params.get("img_flux_ae"):
            raise ValueError("use_t2i2v needs img_flux and img_flux_ae")
        models.image_model = load_mmdit(params["img_flux"], torch_device, dtype, base_dir)
        models.image_vae = load_autoencoder(params["img_flux_ae"], torch_device, dtype, base_dir)
    logger.info("loaded generation models on %s (%s)", torch_device, dtype)
    return models
