"""Named VAE types and sizes, ``build_vae``, and safetensors weight I/O.

``build_vae("tiny_vae", latent_channels=8)`` builds the named size with config fields
overridden; a parameter file (``model: {type: tiny_vae, ...}``) maps onto it directly.
Weights are only ever read and written as safetensors (no pickle).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from opensora_kedro.models.vae.autoencoder_2d import Autoencoder2D, Autoencoder2DConfig
from opensora_kedro.models.vae.base import AutoencoderConfig, VideoAutoencoder
from opensora_kedro.models.vae.causal_vae import CausalVAEConfig, CausalVideoVAE
from opensora_kedro.models.vae.dc_ae import DCAE, DCAEConfig

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class VAESpec:
    """A registered VAE: its model class, its default config and a one-line description."""

    model_cls: type[VideoAutoencoder]
    config: AutoencoderConfig
    description: str


VAE_REGISTRY: dict[str, VAESpec] = {
    "hunyuan_vae": VAESpec(
        CausalVideoVAE,
        CausalVAEConfig(),
        "HunyuanVideo causal 3D VAE: 8x8 spatial, 4x temporal, 16 latent channels",
    ),
    "tiny_vae": VAESpec(
        CausalVideoVAE,
        CausalVAEConfig(
            latent_channels=4,
            block_out_channels=(16, 16, 32, 32),
            layers_per_block=1,
            norm_num_groups=8,
            mid_block_attention=False,
            causal_norm=True,  # trained here from scratch, so it can be strictly causal
            scaling_factor=1.0,
        ),
        "tiny causal VAE for CPU runs: 8x8 spatial, 4x temporal, 4 latent channels",
    ),
    "dc_ae": VAESpec(
        DCAE,
        DCAEConfig(),
        "Video DC-AE dc-ae-f32t4c128: 32x32 spatial, 4x temporal, 128 latent channels",
    ),
    "tiny_dc_ae": VAESpec(
        DCAE,
        DCAEConfig(
            latent_channels=16,
            width_list=(8, 16, 32, 32, 64, 64),
            encoder_depth_list=(1,) * 6,
            decoder_depth_list=(1,) * 6,
            attention_head_dim=8,
            scaling_factor=1.0,
        ),
        "tiny DC-AE for CPU runs: 32x32 spatial, 4x temporal, 16 latent channels",
    ),
    "autoencoder_2d": VAESpec(
        Autoencoder2D,
        Autoencoder2DConfig(),
        "FLUX.1 image VAE (t2i2v's img_flux_ae): 8x8 spatial, per frame, 16 latent channels",
    ),
    "tiny_autoencoder_2d": VAESpec(
        Autoencoder2D,
        Autoencoder2DConfig(
            latent_channels=4,
            scaling_factor=1.0,
            shift_factor=0.0,
            ch=8,
            ch_mult=(1, 2, 2, 2),
            num_res_blocks=1,
            norm_groups=4,
        ),  # fmt: skip
        "tiny FLUX-style image VAE for CPU runs: 8x8 spatial, per frame, 4 latent channels",
    ),
}


def available_vaes() -> tuple[str, ...]:
    """Names accepted by :func:`build_vae`."""
    return tuple(VAE_REGISTRY)


def _spec(type: str) -> VAESpec:
    if type not in VAE_REGISTRY:
        raise ValueError(f"unknown VAE type {type!r}; available: {', '.join(VAE_REGISTRY)}")
    return VAE_REGISTRY[type]


def vae_config(type: str, **overrides: object) -> AutoencoderConfig:
    """The config of a named VAE with ``overrides`` applied (and validated).

    Lists are accepted where a field holds a tuple (parameter files give lists).

    Raises:
        ValueError: unknown type, unknown field (the message lists the valid ones) or an
            inconsistent config.
    """
    base = _spec(type).config
    fields = {f.name: f for f in dataclasses.fields(base)}
    if unknown := sorted(set(overrides) - set(fields)):
        raise ValueError(
            f"unknown config field(s) {unknown} for VAE type {type!r}; "
            f"valid fields: {', '.join(sorted(fields))}"
        )
    coerced = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in overrides.items()
    }
    return dataclasses.replace(base, **coerced)


def build_vae(type: str, **overrides: object) -> VideoAutoencoder:
    """Build the named VAE (randomly initialised; see :func:`load_vae_weights`).

    Args:
        type: one of :func:`available_vaes` (``hunyuan_vae``, ``tiny_vae``, ``dc_ae``,
            ``tiny_dc_ae``, ``autoencoder_2d``, ``tiny_autoencoder_2d``).
        **overrides: config fields of that type to change.

    Raises:
        ValueError: see :func:`vae_config`.
    """
    config = vae_config(type, **overrides)
    model = _spec(type).model_cls(config)
    logger.debug("built VAE %s (%d parameters)", type, sum(p.numel() for p in model.parameters()))
    return model


@dataclass(frozen=True)
class WeightLoadReport:
    """What :func:`load_vae_weights` did: the file and the keys that did not match."""

    path: Path
    loaded: int
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Every model tensor came from the file and the file had nothing else."""
        return not self.missing_keys and not self.unexpected_keys


def resolve_weights_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path / model.safetensors``."""
    path = Path(path)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no weights at {file}")
    return file


def load_vae_weights(
    model: torch.nn.Module, path: str | Path, strict: bool = False
) -> WeightLoadReport:
    """Load safetensors weights into ``model`` in place.

    Args:
        model: the (built) model.
        path: a ``.safetensors`` file or a directory holding ``model.safetensors``.
        strict: raise if any key is missing or unexpected (otherwise they are logged).

    Raises:
        FileNotFoundError: no weights file.
        ValueError: a tensor's shape differs from the model's, or ``strict`` and keys differ.
    """
    file = resolve_weights_path(path)
    state = load_file(str(file), device="cpu")
    own = model.state_dict()
    mismatched = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state.items()
        if key in own and own[key].shape != value.shape
    ]
    if mismatched:
        raise ValueError(f"shape mismatch loading {file}: " + "; ".join(mismatched[:10]))
    result = model.load_state_dict(state, strict=False)
    report = WeightLoadReport(
        path=file,
        loaded=len(state) - len(result.unexpected_keys),
        missing_keys=tuple(result.missing_keys),
        unexpected_keys=tuple(result.unexpected_keys),
    )
    if not report.complete:
        message = (
            f"weights {file}: {len(report.missing_keys)} missing key(s) "
            f"{list(report.missing_keys[:5])}, {len(report.unexpected_keys)} unexpected key(s) "
            f"{list(report.unexpected_keys[:5])}"
        )
        if strict:
            raise ValueError(message)
        logger.warning(message)
    logger.info("loaded %d tensors from %s", report.loaded, file)
    return report


def save_vae_weights(model: torch.nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict as safetensors; a directory gets ``model.safetensors``."""
    path = Path(path)
    file = path if path.suffix == ".safetensors" else path / WEIGHTS_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    save_file(state, str(file), metadata={"format": "pt"})
    return file
