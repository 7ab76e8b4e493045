"""The models' parameters: the MMDiT, the video autoencoders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

if TYPE_CHECKING:
    from opensora_kedro.models.vae.base import VideoAutoencoder


from opensora_kedro.params import NonNegativeInt, Params, PositiveInt


def hidden_size_rule(hidden_size: int, num_heads: int, axes_dim: tuple[int, ...]) -> str | None:
    """Why ``hidden_size`` does not fit the heads (it must be ``num_heads * sum(axes_dim)``,
    the RoPE dims making up a head), or None when it does: the one rule both
    :class:`MMDiTConfig` and the parameter schema apply."""
    head_dim = sum(axes_dim)
    if hidden_size != num_heads * head_dim:
        return f"must equal num_heads * sum(axes_dim) = {num_heads} * {head_dim}"
    return None


class PretrainedWeights:
    """Rules of a group whose ``from_pretrained`` weights ``from_scratch`` can switch off (the
    group declares both fields)."""

    def inert_fields(self) -> list[tuple[tuple, str]]:
        if self.from_scratch and self.from_pretrained:
            return [(("from_pretrained",), "from_scratch is true: no weights are loaded")]
        return []

    def input_paths(self) -> list[tuple[tuple, str]]:
        if self.from_pretrained and not self.from_scratch:
            return [(("from_pretrained",), self.from_pretrained)]
        return []


# Every type in models/vae/registry.py (a test keeps the two equal).
VaeType = Literal[
    "hunyuan_vae", "tiny_vae", "dc_ae", "tiny_dc_ae", "autoencoder_2d", "tiny_autoencoder_2d"
]


class AutoencoderParams(PretrainedWeights, Params):
    """The video autoencoder whose latents the diffusion model learns."""

    type: VaeType = Field(description="registered VAE type")
    from_pretrained: str | None = Field(None, description="checkpoint to load, or null")
    from_scratch: bool = Field(False, description="build without loading weights")
    in_channels: PositiveInt = Field(3, description="channels of the input video")
    out_channels: PositiveInt = Field(3, description="channels of the decoded video")
    layers_per_block: PositiveInt = Field(2, description="residual layers per resolution level")
    latent_channels: PositiveInt = Field(16, description="channels of the latent")
    scaling_factor: float | None = Field(None, description="latent scale applied after encoding")
    use_spatial_tiling: bool = Field(False, description="encode/decode in spatial tiles")
    use_temporal_tiling: bool = Field(False, description="encode/decode in temporal tiles")
    spatial_tile_size: PositiveInt | None = Field(None, description="tile side in pixels")
    temporal_tile_size: PositiveInt | None = Field(None, description="tile length in frames")
    tile_overlap_factor: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None, description="overlap between neighbouring tiles"
    )


class MMDiTParams(Params):
    """The MMDiT (Flux-style) diffusion transformer."""

    type: Literal["flux"] = Field("flux", description="registered model type")
    from_pretrained: str | None = Field(None, description="checkpoint to start from, or null")
    strict_load: bool = Field(False, description="fail on missing or unexpected weights")
    guidance_embed: bool = Field(False, description="embed a guidance scale (distilled models)")
    fused_qkv: bool = Field(False, description="one projection for q, k and v")
    use_liger_rope: bool = Field(
        True,
        description="RoPE convention of an Open-Sora/Flux-format from_pretrained file: true = "
        "rotate-half (Open-Sora 2.0), false = interleaved (FLUX.1); converted at load",
    )
    cond_embed: bool = Field(False, description="input for i2v/v2v conditioning latents")
    in_channels: PositiveInt = Field(64, description="latent channels x patch area")
    vec_in_dim: PositiveInt = Field(768, description="width of the pooled CLIP vector")
    context_in_dim: PositiveInt = Field(4096, description="width of the T5 token embeddings")
    hidden_size: PositiveInt = Field(3072, description="transformer width")
    mlp_ratio: Annotated[float, Field(gt=0)] = Field(4.0, description="MLP width / hidden size")
    num_heads: PositiveInt = Field(24, description="attention heads")
    depth: NonNegativeInt = Field(19, description="double-stream blocks")
    depth_single_blocks: NonNegativeInt = Field(38, description="single-stream blocks")
    axes_dim: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (16, 56, 56), description="RoPE dims per (t, h, w) axis; sum = head dim"
    )
    theta: PositiveInt = Field(10000, description="RoPE base")
    qkv_bias: bool = Field(True, description="bias in the qkv projection")
    patch_size: PositiveInt = Field(2, description="latent patch side (1 for DC-AE latents)")
    lora_path: str | None = Field(
        None, description="LoRA adapter folder (peft format) merged into from_pretrained at load"
    )

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        # The model's own rule (models.mmdit builds its config by it too).
        if rule := hidden_size_rule(self.hidden_size, self.num_heads, self.axes_dim):
            return [(("hidden_size",), self.hidden_size, rule)]
        return []

    def input_paths(self) -> list[tuple[tuple, str]]:
        return [(("from_pretrained",), self.from_pretrained)] if self.from_pretrained else []


class VaeModelParams(PretrainedWeights, Params):
    """The autoencoder being trained: a registered type and size, with field overrides."""

    type: VaeType = Field(description="registered VAE (models/vae/registry.py)")
    from_scratch: bool = Field(True, description="initialise randomly, ignoring from_pretrained")
    from_pretrained: str | None = Field(None, description="safetensors weights to start from")
    config: dict[str, Any] = Field(
        default_factory=dict, description="config fields of the type to override"
    )

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        import dataclasses

        from opensora_kedro.config.validate import suggest
        from opensora_kedro.models.vae.registry import vae_config

        known = [f.name for f in dataclasses.fields(vae_config(self.type))]
        unknown = [name for name in self.config if name not in known]
        if unknown:  # each at its own key, so the file (or --params) that set it is named
            return [
                (("config", name), self.config[name],
                 f"unknown config field for VAE type {self.type!r}"
                 + (f"; did you mean '{close}'?" if (close := suggest(name, known)) else ""))
                for name in unknown
            ]  # fmt: skip
        try:
            vae_config(self.type, **self.config)
        except (ValueError, TypeError) as error:
            return [(("config",), self.config, str(error))]
        return []

    def meta_model(self) -> VideoAutoencoder | None:
        """The configured model built on the meta device (no memory, no time): its frame
        rules. None when the config does not build (``cross_checks`` reports why)."""
        import torch

        from opensora_kedro.models.vae.registry import build_vae

        try:
            with torch.device("meta"):
                return build_vae(self.type, **self.config)
        except (ValueError, TypeError):
            return None
