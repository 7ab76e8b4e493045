"""Load the (frozen) video autoencoder an ``ae`` parameter group names: one way for training
and inference.

``ae.from_pretrained`` may be

- a folder holding our export (``config.json`` = ``{"type", "config"}`` + ``model.safetensors``,
  as the ``vae_training`` pipeline writes it): built from its config; ``ae.type`` must match;
- a ``.safetensors`` file (or a folder with ``model.safetensors`` only): built as ``ae.type``
  with the structural fields of ``ae`` (the type's defaults where ``ae`` leaves one null);
- null: the ``fallback`` folder (the pipeline's ``vae_model`` export), when there is one.

Weights are always loaded strictly; ``from_scratch: true`` builds without loading any.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from opensora_kedro.files import resolve_path, weights_file
from opensora_kedro.models.vae.base import VideoAutoencoder
from opensora_kedro.models.vae.registry import (
    WEIGHTS_FILE,
    build_vae,
    load_vae_weights,
    vae_config,
)

logger = logging.getLogger(__name__)

EXPORT_CONFIG = "config.json"
# ae parameter -> AutoencoderConfig field, where the names differ (Open-Sora's autoencoder_2d
# parameters say z_channels and scale_factor).
_FIELD_NAMES = {"spatial_tile_size": "tile_sample_size", "temporal_tile_size": "tile_sample_frames",
                "z_channels": "latent_channels", "scale_factor": "scaling_factor"}  # fmt: skip
_STRUCTURAL = (
    "in_channels", "latent_channels", "layers_per_block", "scaling_factor", "shift_factor",
    "z_channels", "scale_factor", "ch", "ch_mult", "num_res_blocks",
)  # fmt: skip
_TILING = (
    "use_spatial_tiling",
    "use_temporal_tiling",
    "spatial_tile_size",
    "temporal_tile_size",
    "tile_overlap_factor",
)


@dataclass(frozen=True)
class VAESource:
    """Where a VAE comes from: its weights file (``None``: from scratch) and, for our export,
    the saved ``{"type", "config"}``."""

    weights: Path | None
    export: dict[str, Any] | None = None


def resolve_vae_source(
    ae_params: Mapping[str, Any],
    fallback: str | os.PathLike | None = None,
    base_dir: str | os.PathLike | None = None,
) -> VAESource:
    """Which weights (and export config) ``ae_params`` names; ``fallback`` when it names none.

    Raises:
        ValueError: nothing to load, or the export's type differs from ``ae.type``.
        FileNotFoundError: the named weights do not exist.
    """
    if ae_params.get("from_scratch"):
        return VAESource(None)
    named = ae_params.get("from_pretrained") or fallback
    if not named:
        raise ValueError("ae.from_pretrained is not set and there is no exported VAE to use")
    source = resolve_path(named, base_dir)
    saved = source / EXPORT_CONFIG
    if not saved.is_file():
        return VAESource(weights_file(source, "autoencoder", WEIGHTS_FILE))
    export = json.loads(saved.read_text())
    wanted = ae_params.get("type")
    if wanted is not None and wanted != export["type"]:
        raise ValueError(
            f"ae.type is {wanted!r} but the VAE exported at {source} is a {export['type']!r}; "
            "set ae.type to match, or point ae.from_pretrained at a matching VAE"
        )
    return VAESource(weights_file(source, "autoencoder", WEIGHTS_FILE), export)


def _fields(ae_params: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The given ``ae`` parameters that are set, under their config field names."""
    return {
        _FIELD_NAMES.get(name, name): ae_params[name]
        for name in names
        if ae_params.get(name) is not None
    }


def _build_from_params(ae_params: Mapping[str, Any]) -> VideoAutoencoder:
    """``ae.type`` with the structural and tiling fields of ``ae`` that the type has."""
    if "type" not in ae_params:
        raise ValueError("ae.type is needed to build a VAE from a weights file")
    for name in ("out_channels", "out_ch"):
        out = ae_params.get(name)
        if out is not None and out != ae_params.get("in_channels", 3):
            raise ValueError(f"ae.{name} {out} must equal in_channels: decoders output them")
    known = {f.name for f in dataclasses.fields(vae_config(ae_params["type"]))}
    fields = _fields(ae_params, _STRUCTURAL + _TILING)
    # Schema defaults such as layers_per_block also reach types that lack the field (DC-AE).
    skipped = sorted(set(fields) - known)
    if skipped:
        logger.debug("ae fields %s do not apply to %s", skipped, ae_params["type"])
    return build_vae(ae_params["type"], **{k: v for k, v in fields.items() if k in known})


def build_autoencoder(source: VAESource, ae_params: Mapping[str, Any]) -> VideoAutoencoder:
    """The VAE of ``source`` (see :func:`resolve_vae_source`), on the CPU in fp32, frozen."""
    if source.export is not None:
        vae = build_vae(source.export["type"], **source.export["config"])
        tiling = _fields(ae_params, _TILING)
        if tiling:  # inference settings, not structure: the params choose them
            vae.set_tiling(**tiling)
    else:
        vae = _build_from_params(ae_params)
    if source.weights is not None:
        load_vae_weights(vae, source.weights, strict=True)
    else:
        logger.warning("ae.from_scratch: the VAE keeps its random initialisation")
    wanted = ae_params.get("latent_channels", vae.latent_channels)
    if wanted != vae.latent_channels:
        raise ValueError(
            f"ae.latent_channels {wanted} but the VAE at {source.weights} has {vae.latent_channels}"
        )
    return vae.eval().requires_grad_(False)


def load_autoencoder(
    ae_params: Mapping[str, Any],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    base_dir: str | os.PathLike | None = None,
    fallback: str | os.PathLike | None = None,
) -> VideoAutoencoder:
    """The frozen VAE ``ae_params`` names (relative paths from ``base_dir``, else the working
    directory), on ``device`` in ``dtype``; ``fallback`` when ``from_pretrained`` is null."""
    source = resolve_vae_source(ae_params, fallback, base_dir)
    return build_autoencoder(source, ae_params).to(device, dtype)


def autoencoder_structure(
    ae_params: Mapping[str, Any], fallback: str | os.PathLike | None = None
) -> VideoAutoencoder:
    """The VAE ``ae_params`` describes, without weights, on the meta device (no memory): its
    compression and latent channels. Our export's config when there is one, else ``ae``'s
    fields (also when the named weights are missing: only the structure is wanted)."""
    try:
        export = resolve_vae_source(ae_params, fallback).export
    except (ValueError, FileNotFoundError):
        export = None
    with torch.device("meta"):
        if export is not None:
            return build_vae(export["type"], **export["config"])
        return _build_from_params(ae_params)
