"""The FLUX.1 image autoencoder (Open-Sora's ``autoencoder_2d``, t2i2v's ``img_flux_ae``).

A 2D convolutional VAE: 8x spatial compression with ``ch_mult = (1, 2, 4, 4)``, 16 latent
channels, no temporal compression (each frame is coded on its own), one self-attention block
in the middle of the encoder and of the decoder. Latents are scaled as
``(z - shift_factor) * scaling_factor`` (FLUX.1-dev: 0.1159 and 0.3611).

``residual_shortcut`` adds DC-AE's non-parametric residual shortcuts around the whole encoder
and decoder (space-to-channel averaging of the pixels into the latent mean, channel duplication
of the latent back to pixels): the latent starts as a block average of the colours and the
network learns what that misses. A latent that simple is one a small diffusion model learns
quickly. The shortcuts have no parameters, so the released weights load either way.

Tensor names follow the released ``ae.safetensors`` (``encoder.down.N.block.M.norm1`` ...,
``decoder.up.N.upsample.conv``), so the file loads strictly as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opensora_kedro.models.vae.base import (
    AutoencoderConfig,
    DiagonalGaussianDistribution,
    VideoAutoencoder,
    run_block,
)
from opensora_kedro.models.vae.dc_ae import ChannelDuplicatingToSpace, SpaceToChannelAveraging


@dataclass
class Autoencoder2DConfig(AutoencoderConfig):
    """:class:`AutoencoderConfig` plus the 2D network's widths (defaults: FLUX.1's AE).

    Attributes:
        ch: channels of the first level.
        ch_mult: channel multiplier per level; each level but the last halves H and W.
        num_res_blocks: residual blocks per encoder level (decoder levels have one more).
        norm_groups: groups of every GroupNorm.
        gradient_checkpointing: recompute residual blocks in backward to save memory.
        residual_shortcut: add DC-AE's parameter-free shortcuts around encoder and decoder
            (``in_channels * compression**2`` must be a multiple of ``latent_channels``).
    """

    latent_channels: int = 16
    scaling_factor: float = 0.3611
    shift_factor: float = 0.1159
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    norm_groups: int = 32
    gradient_checkpointing: bool = False
    residual_shortcut: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        widths = [self.ch * m for m in self.ch_mult]
        if not self.ch_mult or any(w % self.norm_groups for w in widths):
            raise ValueError(f"every level width {widths} must be divisible by norm_groups "
                             f"{self.norm_groups}")  # fmt: skip
        pixels = self.in_channels * 4 ** (len(self.ch_mult) - 1)
        if self.residual_shortcut and pixels % self.latent_channels:
            raise ValueError(f"residual_shortcut averages the {pixels} pixel values of a "
                             f"latent position: latent_channels {self.latent_channels} must "
                             "divide it")  # fmt: skip


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm -> swish -> 3x3 conv, twice, plus a (1x1-projected) skip."""

    def __init__(self, channels_in: int, channels_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(channels_in, groups)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.norm2 = _norm(channels_out, groups)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        if channels_in != channels_out:
            self.nin_shortcut = nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Residual update of ``x [B, C, H, W]``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1x1-conv projections."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Residual attention over ``x [B, C, H, W]``."""
        h = self.norm(x)
        b, c, height, width = x.shape
        q, k, v = (proj(h).flatten(2).transpose(1, 2)[:, None] for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2)
        return x + self.proj_out(out.reshape(b, c, height, width))


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 3x3 conv: halves H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Halve the spatial size of ``x``."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Double the spatial size of ``x``."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[ResnetBlock], resample: nn.Module | None, name: str) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList()  # FLUX's AE has no attention inside its levels
    if resample is not None:
        level.add_module(name, resample)
    return level


def _middle(channels: int, groups: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, groups)
    mid.attn_1 = AttnBlock(channels, groups)
    mid.block_2 = ResnetBlock(channels, channels, groups)
    return mid


def _run_middle(mid: nn.Module, h: Tensor) -> Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class Encoder2D(nn.Module):
    """Image -> posterior moments ``[B, 2 * z, H/f, W/f]``."""

    def __init__(self, c: Autoencoder2DConfig) -> None:
        super().__init__()
        g, widths = c.norm_groups, [c.ch * m for m in c.ch_mult]
        self.ckpt = c.gradient_checkpointing
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = c.ch
        for i, out in enumerate(widths):
            blocks = [
                ResnetBlock(width if j == 0 else out, out, g) for j in range(c.num_res_blocks)
            ]
            width = out
            last = i == len(widths) - 1
            self.down.append(_level(blocks, None if last else Downsample(out), "downsample"))
        self.mid = _middle(width, g)
        self.norm_out = _norm(width, g)
        self.conv_out = nn.Conv2d(width, 2 * c.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Moments of ``x [B, C, H, W]``."""
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = run_block(block, h, self.ckpt)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_middle(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder2D(nn.Module):
    """Latent ``[B, z, h, w]`` -> image; ``up[i]`` is level i (0 = full resolution)."""

    def __init__(self, c: Autoencoder2DConfig) -> None:
        super().__init__()
        g, widths = c.norm_groups, [c.ch * m for m in c.ch_mult]
        self.ckpt = c.gradient_checkpointing
        width = widths[-1]
        self.conv_in = nn.Conv2d(c.latent_channels, width, 3, padding=1)
        self.mid = _middle(width, g)
        levels = []
        for i in reversed(range(len(widths))):
            out = widths[i]
            blocks = [ResnetBlock(width if j == 0 else out, out, g)
                      for j in range(c.num_res_blocks + 1)]  # fmt: skip
            width = out
            levels.insert(0, _level(blocks, Upsample(out) if i else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(width, g)
        self.conv_out = nn.Conv2d(width, c.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """Image of ``z``."""
        h = _run_middle(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = run_block(block, h, self.ckpt)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder2D(VideoAutoencoder):
    """FLUX.1's 2D VAE behind the video interface: every frame is coded on its own."""

    def __init__(self, config: Autoencoder2DConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder2D(config)
        self.decoder = Decoder2D(config)
        # Parameter-free (see the module docstring): the state dict is the same either way.
        self.encoder_shortcut = self.decoder_shortcut = None
        if config.residual_shortcut:
            c, z, f = config.in_channels, config.latent_channels, self.spatial_compression
            self.encoder_shortcut = SpaceToChannelAveraging(c, z, 1, f)
            self.decoder_shortcut = ChannelDuplicatingToSpace(z, c, 1, f)

    @property
    def spatial_compression(self) -> int:
        """Pixels per latent along H and W."""
        return 2 ** (len(self.config.ch_mult) - 1)

    @property
    def temporal_compression(self) -> int:
        """Frames per latent frame: 1 (no temporal coding)."""
        return 1

    @property
    def is_causal(self) -> bool:
        """Frames are independent, so any frame count is valid."""
        return False

    def _per_frame(self, fn, x: Tensor) -> Tensor:
        b, _, t = x.shape[:3]
        frames = x.permute(0, 2, 1, 3, 4).flatten(0, 1)
        out = fn(frames)
        return out.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)

    def _encode_tile(self, x: Tensor) -> Tensor:
        moments = self._per_frame(self.encoder, x)
        if self.encoder_shortcut is None:
            return moments
        mean, logvar = moments.chunk(2, dim=1)
        return torch.cat([mean + self.encoder_shortcut(x), logvar], dim=1)

    def _decode_tile(self, z: Tensor) -> Tensor:
        x = self._per_frame(self.decoder, z)
        return x if self.decoder_shortcut is None else x + self.decoder_shortcut(z)

    def _posterior(self, moments: Tensor) -> DiagonalGaussianDistribution:
        return DiagonalGaussianDistribution(moments)
