"""Video autoencoders: a HunyuanVideo-style causal VAE and a DC-AE, one interface, a registry."""

from opensora_kedro.models.vae.base import (
    AutoencoderConfig,
    DiagonalGaussianDistribution,
    VideoAutoencoder,
)
from opensora_kedro.models.vae.causal_vae import CausalVAEConfig, CausalVideoVAE
from opensora_kedro.models.vae.dc_ae import DCAE, DCAEConfig
from opensora_kedro.models.vae.losses import LPIPS, VAELoss
from opensora_kedro.models.vae.registry import (
    VAE_REGISTRY,
    WeightLoadReport,
    available_vaes,
    build_vae,
    load_vae_weights,
    save_vae_weights,
    vae_config,
)

__all__ = [
    "DCAE",
    "LPIPS",
    "VAE_REGISTRY",
    "AutoencoderConfig",
    "CausalVAEConfig",
    "CausalVideoVAE",
    "DCAEConfig",
    "DiagonalGaussianDistribution",
    "VAELoss",
    "VideoAutoencoder",
    "WeightLoadReport",
    "available_vaes",
    "build_vae",
    "load_vae_weights",
    "save_vae_weights",
    "vae_config",
]
