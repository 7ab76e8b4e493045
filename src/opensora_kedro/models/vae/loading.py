"""Load the (frozen) video autoencoder an ``ae`` parameter group names: one way for training
and inference.

``ae.from_pretrained`` may be

- a folder holding our export (``config.json`` = ``{"type", "config"}`` + ``model.safetensors``,
  as the ``vae_training`` pipeline writes it): built from its config; ``ae.type`` must match;
- a ``.safetensors`` file (or a folder with ``model.safetensors`` only): built as ``ae.type``
  with the structural fields of ``ae`` (the type's defaults where ``ae`` leaves one null);
- null: the ``fallback`` folder (the pipeline's ``vae_model`` export), when there is one.

Weights are always loaded strictly; ``from_scratch: true`` builds without loading any. An
export folder alone loads with :func:`load_exported_autoencoder`, t2i2v's image VAE (an
untyped ``img_flux_ae`` block) with :func:`load_image_autoencoder`.
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
from opensora_kedro.models.params import AutoencoderParams
from opensora_kedro.models.vae.base import VideoAutoencoder
from opensora_kedro.models.vae.registry import (
    WEIGHTS_FILE,
    build_vae,
    load_vae_weights,
    vae_config,
)

logger = logging.getLogger(__name__)

EXPORT_CONFIG = "config.json"


@dataclass(frozen=True)
class VAESource:
    """Where a VAE comes from: its weights file (``None``: from scratch) and, for our export,
    the saved ``{"type", "config"}``."""

    weights: Path | None
    export: dict[str, Any] | None = None


def resolve_vae_source(
    ae: AutoencoderParams,
    fallback: str | os.PathLike | None = None,
    base_dir: str | os.PathLike | None = None,
) -> VAESource:
    """Which weights (and export config) ``ae`` names; ``fallback`` when it names none.

    Raises:
        ValueError: nothing to load, or the export's type differs from ``ae.type``.
        FileNotFoundError: the named weights do not exist.
    """
    return _resolve(ae.type, ae.from_pretrained, ae.from_scratch, fallback, base_dir)


def _resolve(
    wanted: str | None,
    named: str | os.PathLike | None,
    from_scratch: bool,
    fallback: str | os.PathLike | None,
    base_dir: str | os.PathLike | None,
) -> VAESource:
    """:func:`resolve_vae_source` of a type (None: any), its weights and its from_scratch."""
    if from_scratch:
        return VAESource(None)
    named = named or fallback
    if not named:
        raise ValueError("ae.from_pretrained is not set and there is no exported VAE to use")
    source = resolve_path(named, base_dir)
    saved = source / EXPORT_CONFIG
    if not saved.is_file():
        return VAESource(weights_file(source, "autoencoder", WEIGHTS_FILE))
    export = json.loads(saved.read_text())
    if wanted is not None and wanted != export["type"]:
        raise ValueError(
            f"ae.type is {wanted!r} but the VAE exported at {source} is a {export['type']!r}; "
            "set ae.type to match, or point ae.from_pretrained at a matching VAE"
        )
    return VAESource(weights_file(source, "autoencoder", WEIGHTS_FILE), export)


# build_vae and set_tiling take the type's config dataclass fields as keywords: these two
# are where an ``ae`` group becomes that dict (its fields under the config's names).
def _structure(ae: AutoencoderParams) -> dict[str, Any]:
    """``ae``'s structural fields that are set, as config fields."""
    if ae.out_channels != ae.in_channels:
        raise ValueError(
            f"ae.out_channels {ae.out_channels} must equal in_channels: decoders output them"
        )
    fields = {
        "in_channels": ae.in_channels,
        "latent_channels": ae.latent_channels,
        "layers_per_block": ae.layers_per_block,
        "scaling_factor": ae.scaling_factor,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _tiling(ae: AutoencoderParams) -> dict[str, Any]:
    """``ae``'s tiling settings that are set, as config fields."""
    fields = {
        "use_spatial_tiling": ae.use_spatial_tiling,
        "use_temporal_tiling": ae.use_temporal_tiling,
        "tile_sample_size": ae.spatial_tile_size,
        "tile_sample_frames": ae.temporal_tile_size,
        "tile_overlap_factor": ae.tile_overlap_factor,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _build_from_fields(vae_type: str | None, fields: dict[str, Any]) -> VideoAutoencoder:
    """``vae_type`` with those of the config ``fields`` (structure, tiling) the type has."""
    if vae_type is None:
        raise ValueError("ae.type is needed to build a VAE from a weights file")
    known = {f.name for f in dataclasses.fields(vae_config(vae_type))}
    # Schema defaults such as layers_per_block also reach types that lack the field (DC-AE).
    skipped = sorted(set(fields) - known)
    if skipped:
        logger.debug("ae fields %s do not apply to %s", skipped, vae_type)
    return build_vae(vae_type, **{k: v for k, v in fields.items() if k in known})


def _finish(
    source: VAESource, vae: VideoAutoencoder, latent_channels: int | None
) -> VideoAutoencoder:
    """``vae`` with ``source``'s weights, checked against the wanted latent channels, frozen."""
    if source.weights is not None:
        load_vae_weights(vae, source.weights, strict=True)
    else:
        logger.warning("ae.from_scratch: the VAE keeps its random initialisation")
    wanted = vae.latent_channels if latent_channels is None else latent_channels
    if wanted != vae.latent_channels:
        raise ValueError(
            f"ae.latent_channels {wanted} but the VAE at {source.weights} has {vae.latent_channels}"
        )
    return vae.eval().requires_grad_(False)


def _from_export(source: VAESource, tiling: dict[str, Any]) -> VideoAutoencoder:
    """Our export's VAE, with the tiling the params choose (inference settings, not
    structure)."""
    vae = build_vae(source.export["type"], **source.export["config"])
    if tiling:
        vae.set_tiling(**tiling)
    return vae


def build_autoencoder(source: VAESource, ae: AutoencoderParams) -> VideoAutoencoder:
    """The VAE of ``source`` (see :func:`resolve_vae_source`), on the CPU in fp32, frozen."""
    if source.export is not None:
        vae = _from_export(source, _tiling(ae))
    else:
        vae = _build_from_fields(ae.type, _structure(ae) | _tiling(ae))
    return _finish(source, vae, ae.latent_channels)


def load_autoencoder(
    ae: AutoencoderParams,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    base_dir: str | os.PathLike | None = None,
    fallback: str | os.PathLike | None = None,
) -> VideoAutoencoder:
    """The frozen VAE ``ae`` names (relative paths from ``base_dir``, else the working
    directory), on ``device`` in ``dtype``; ``fallback`` when ``from_pretrained`` is null."""
    source = resolve_vae_source(ae, fallback, base_dir)
    return build_autoencoder(source, ae).to(device, dtype)


def load_exported_autoencoder(
    folder: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VideoAutoencoder:
    """The frozen VAE our export in ``folder`` holds (the ``vae_training`` pipeline's
    ``vae_model``), whatever its type, as its config says.

    Raises:
        ValueError: ``folder`` holds weights without our export's config.
    """
    source = _resolve(None, folder, False, None, None)
    if source.export is None:
        raise ValueError(f"{folder} holds no {EXPORT_CONFIG}: not a VAE export")
    return _finish(source, _from_export(source, {}), None).to(device, dtype)


# Open-Sora's ``img_flux_ae`` key -> config field, where the names differ (its autoencoder_2d
# parameters say z_channels and scale_factor).
_IMAGE_FIELD_NAMES = {
    "spatial_tile_size": "tile_sample_size",
    "temporal_tile_size": "tile_sample_frames",
    "z_channels": "latent_channels",
    "scale_factor": "scaling_factor",
}
_IMAGE_STRUCTURAL = (
    "in_channels", "latent_channels", "layers_per_block", "scaling_factor", "shift_factor",
    "z_channels", "scale_factor", "ch", "ch_mult", "num_res_blocks",
)  # fmt: skip
_IMAGE_TILING = (
    "use_spatial_tiling",
    "use_temporal_tiling",
    "spatial_tile_size",
    "temporal_tile_size",
    "tile_overlap_factor",
)


def _image_fields(block: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The given keys of ``block`` that are set, under their config field names."""
    return {
        _IMAGE_FIELD_NAMES.get(name, name): block[name]
        for name in names
        if block.get(name) is not None
    }


def load_image_autoencoder(
    block: Mapping[str, Any],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    base_dir: str | os.PathLike | None = None,
) -> VideoAutoencoder:
    """The frozen image VAE of t2i2v (an ``inference`` group's ``img_flux_ae``), as
    :func:`load_autoencoder` loads an ``ae`` group.

    The schema keeps that block a plain mapping: it takes Open-Sora's ``autoencoder_2d``
    parameters (``z_channels``, ``scale_factor``, ``ch``, ``ch_mult``, ``out_ch``, ...), the
    registry's config fields under Open-Sora's names, so its keys are read here.
    """
    source = _resolve(block.get("type"), block.get("from_pretrained"),
                      bool(block.get("from_scratch")), None, base_dir)  # fmt: skip
    if source.export is not None:
        vae = _from_export(source, _image_fields(block, _IMAGE_TILING))
    else:
        for name in ("out_channels", "out_ch"):
            out = block.get(name)
            if out is not None and out != block.get("in_channels", 3):
                raise ValueError(f"ae.{name} {out} must equal in_channels: decoders output them")
        fields = _image_fields(block, _IMAGE_STRUCTURAL + _IMAGE_TILING)
        vae = _build_from_fields(block.get("type"), fields)
    return _finish(source, vae, block.get("latent_channels")).to(device, dtype)


def autoencoder_structure(
    ae: AutoencoderParams, fallback: str | os.PathLike | None = None
) -> VideoAutoencoder:
    """The VAE ``ae`` describes, without weights, on the meta device (no memory): its
    compression and latent channels. Our export's config when there is one, else ``ae``'s
    fields (also when the named weights are missing: only the structure is wanted)."""
    try:
        export = resolve_vae_source(ae, fallback).export
    except (ValueError, FileNotFoundError):
        export = None
    with torch.device("meta"):
        if export is not None:
            return build_vae(export["type"], **export["config"])
        return _build_from_fields(ae.type, _structure(ae) | _tiling(ae))
