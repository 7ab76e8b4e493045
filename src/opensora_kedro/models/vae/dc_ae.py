"""A deep-compression video autoencoder in the style of DC-AE (``dc-ae-f32t4c128``, brief §9.2).

Six stages of widths (128, 256, 512, 512, 1024, 1024): ResNet blocks in the first three,
EfficientViT blocks (ReLU linear attention with a 5x5x5 multi-scale aggregation, then a GLU
inverted-bottleneck conv) in the last three. Each of the five downsamplings is a stride-2 conv
(x2 in H and W; also in T after stages 4 and 5) *plus DC-AE's residual shortcut*: space-to-channel
(pixel unshuffle) followed by averaging groups of channels down to the next width. The decoder
mirrors it: nearest upsampling + conv, plus the shortcut channel duplication followed by
channel-to-space (pixel shuffle). The encoder's output conv has a channel-averaging shortcut and
the decoder's input conv a channel-duplicating one. These shortcuts let the network pass
information through the high compression without learning it from scratch.

Non-causal (zero padding both ways in time), deterministic (no posterior, KL weight 0):
``T_lat = T // 4`` for ``T`` a multiple of 4, ``H_lat = H // 32``. Open-Sora also accepts single
images (T = 1, temporal resampling skipped); this implementation does not. Module and parameter
names follow Open-Sora's ``dc_ae`` (efficientvit's ``op_list`` / ``main`` layout) so its state
dict can map onto this one (checked against the source, not against the weights file).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opensora_kedro.models.vae.base import AutoencoderConfig, VideoAutoencoder, run_block

BLOCK_TYPES = ("ResBlock", "EViTS5_GLU")
RMS_EPS = 1e-5
LINEAR_ATTENTION_EPS = 1e-15  # efficientvit's; the ones-row normaliser is >= 0


@dataclass
class DCAEConfig(AutoencoderConfig):
    """Configuration of :class:`DCAE`; the defaults are Open-Sora's ``dc-ae-f32t4c128``.

    Attributes:
        width_list: channels per stage (encoder and decoder share them).
        encoder_depth_list: blocks per encoder stage.
        decoder_depth_list: blocks per decoder stage.
        block_types: ``"ResBlock"`` or ``"EViTS5_GLU"`` per stage.
        temporal_downsample: per stage, whether the downsampler after it also halves T
            (the last stage has no downsampler; its flag must be False).
        attention_head_dim: channels per linear-attention head in EfficientViT blocks.
        glu_expand_ratio: hidden width of the GLU conv, relative to the stage width.
        gradient_checkpointing: recompute stage activations in backward to save memory.
    """

    latent_channels: int = 128
    scaling_factor: float = 1 / 0.493  # Open-Sora's DC-AE divides by 0.493 on encode
    tile_sample_frames: int = 32
    width_list: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_depth_list: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_depth_list: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    block_types: tuple[str, ...] = ("ResBlock",) * 3 + ("EViTS5_GLU",) * 3
    temporal_downsample: tuple[bool, ...] = (False, False, False, True, True, False)
    attention_head_dim: int = 32
    glu_expand_ratio: float = 4.0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        stages = len(self.width_list)
        per_stage = ("encoder_depth_list", "decoder_depth_list", "block_types")
        for name in (*per_stage, "temporal_downsample"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"{name} needs one entry per stage ({stages})")
        if min(self.encoder_depth_list + self.decoder_depth_list) < 1:
            raise ValueError("every stage needs at least one block")
        if unknown := set(self.block_types) - set(BLOCK_TYPES):
            raise ValueError(f"unknown block types {sorted(unknown)}; valid: {BLOCK_TYPES}")
        if self.temporal_downsample[-1]:
            raise ValueError("the last stage has no downsampler: its temporal flag must be False")
        self._check_shortcut_channels()

    def _check_shortcut_channels(self) -> None:
        # The shortcuts average / duplicate whole groups of channels, so sizes must divide.
        for i, (w_in, w_out) in enumerate(itertools.pairwise(self.width_list)):
            factor = 8 if self.temporal_downsample[i] else 4
            if (w_in * factor) % w_out or (w_out * factor) % w_in:
                raise ValueError(f"stage {i}: widths {w_in}->{w_out} do not fit the shortcut")
        if self.width_list[-1] % self.latent_channels:
            raise ValueError("latent_channels must divide the last width (channel averaging)")
        for width, kind in zip(self.width_list, self.block_types, strict=True):
            if kind != "ResBlock" and width % self.attention_head_dim:
                raise ValueError(f"attention_head_dim must divide the EViT width {width}")


# -- space <-> channel ---------------------------------------------------------------------------


def space_to_channel(x: Tensor, ft: int, fs: int) -> Tensor:
    """Pixel unshuffle of ``[B, C, T, H, W]`` by ``ft`` in T and ``fs`` in H and W; the channel
    order (``c, rt, rh, rw``) matches Open-Sora's ``pixel_unshuffle_3d`` / ``F.pixel_unshuffle``."""
    b, c, t, h, w = x.shape
    x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * ft * fs * fs, t // ft, h // fs, w // fs)


def channel_to_space(x: Tensor, ft: int, fs: int) -> Tensor:
    """The inverse of :func:`space_to_channel`."""
    b, c, t, h, w = x.shape
    c_out = c // (ft * fs * fs)
    x = x.view(b, c_out, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c_out, t * ft, h * fs, w * fs)


class SpaceToChannelAveraging(nn.Module):
    """DC-AE's downsampling shortcut: space-to-channel, then average channel groups to
    ``out_channels`` (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, ft: int, fs: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.ft, self.fs = in_channels, out_channels, ft, fs

    def forward(self, x: Tensor) -> Tensor:
        """Downsample ``[B, C, T, H, W]``."""
        x = space_to_channel(x, self.ft, self.fs)
        b, c, t, h, w = x.shape
        return x.view(b, self.out_channels, c // self.out_channels, t, h, w).mean(dim=2)


class ChannelDuplicatingToSpace(nn.Module):
    """DC-AE's upsampling shortcut: repeat each channel, then channel-to-space (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, ft: int, fs: int) -> None:
        super().__init__()
        self.repeats = out_channels * ft * fs * fs // in_channels
        self.ft, self.fs = ft, fs

    def forward(self, x: Tensor) -> Tensor:
        """Upsample ``[B, C, T, H, W]``."""
        return channel_to_space(x.repeat_interleave(self.repeats, dim=1), self.ft, self.fs)


# -- building blocks (efficientvit layout) -----------------------------------------------------


class RMSNorm3d(nn.Module):
    """RMS norm over channels at every position, with a per-channel scale and bias."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``[B, C, T, H, W]``."""
        rms = torch.rsqrt(x.float().square().mean(dim=1, keepdim=True) + RMS_EPS)
        x = (x * rms).to(x.dtype)
        return x * self.weight.view(1, -1, 1, 1, 1) + self.bias.view(1, -1, 1, 1, 1)


class ConvLayer(nn.Module):
    """Conv3d with 'same' zero padding, then an optional RMS norm and activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int | tuple[int, int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        norm: bool = False,
        act: nn.Module | None = None,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size, stride, pad, groups=groups, bias=bias)
        self.norm = RMSNorm3d(out_ch) if norm else None
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        """Apply conv, norm, activation."""
        x = self.conv(x)
        x = x if self.norm is None else self.norm(x)
        return x if self.act is None else self.act(x)


class ResidualBlock(nn.Module):
    """``main(x) + shortcut(x)``."""

    def __init__(self, main: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.main, self.shortcut = main, shortcut

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return self.main(x) + self.shortcut(x)


class OpSequential(nn.Module):
    """A sequence of modules (efficientvit's name, kept for the state-dict keys)."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the modules in order."""
        for op in self.op_list:
            x = op(x)
        return x


class ResBlock(nn.Module):
    """conv3 (bias, SiLU) -> conv3 (no bias, RMS norm)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(ch, ch, 3, bias=True, act=nn.SiLU())
        self.conv2 = ConvLayer(ch, ch, 3, bias=False, norm=True)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block (its residual is added by the caller's ResidualBlock)."""
        return self.conv2(self.conv1(x))


class LiteMLA(nn.Module):
    """EfficientViT's multi-scale ReLU linear attention over all ``T*H*W`` positions.

    ``q, k, v`` come from a 1x1 conv; a depthwise 5x5x5 + grouped 1x1 conv makes a second,
    locally aggregated set of heads. Attention is ``relu(q) (relu(k)^T v)`` normalised by
    ``relu(q) relu(k)^T 1`` — linear in the number of positions.
    """

    def __init__(self, ch: int, head_dim: int, scales: tuple[int, ...] = (5,)) -> None:
        super().__init__()
        heads = ch // head_dim
        total = heads * head_dim
        self.head_dim = head_dim
        self.qkv = ConvLayer(ch, 3 * total, 1, bias=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(3 * total, 3 * total, k, padding=k // 2, groups=3 * total, bias=False),
                nn.Conv3d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for k in scales
        )
        self.proj = ConvLayer(total * (1 + len(scales)), ch, 1, bias=False, norm=True)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over ``[B, C, T, H, W]``."""
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)
        b, _, t, h, w = qkv.shape
        qkv = qkv.float().reshape(b, -1, 3 * self.head_dim, t * h * w)
        q, k, v = qkv.split(self.head_dim, dim=2)
        q, k = F.relu(q), F.relu(k)
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # a row of ones yields the normaliser
        out = (v @ k.transpose(-1, -2)) @ q  # [B, heads, d + 1, N]
        out = out[:, :, :-1] / (out[:, :, -1:] + LINEAR_ATTENTION_EPS)
        return self.proj(out.reshape(b, -1, t, h, w).to(x.dtype))


class GLUMBConv(nn.Module):
    """1x1 expand (SiLU) -> depthwise 3x3x3 -> GLU (SiLU gate) -> 1x1 project (RMS norm)."""

    def __init__(self, ch: int, expand_ratio: float) -> None:
        super().__init__()
        mid = round(ch * expand_ratio)
        self.inverted_conv = ConvLayer(ch, 2 * mid, 1, bias=True, act=nn.SiLU())
        self.depth_conv = ConvLayer(2 * mid, 2 * mid, 3, groups=2 * mid, bias=True)
        self.point_conv = ConvLayer(mid, ch, 1, bias=False, norm=True)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        x, gate = self.depth_conv(self.inverted_conv(x)).chunk(2, dim=1)
        return self.point_conv(x * F.silu(gate))


class EfficientViTBlock(nn.Module):
    """Residual linear attention (context) then residual GLU conv (local)."""

    def __init__(self, ch: int, cfg: DCAEConfig) -> None:
        super().__init__()
        attention = LiteMLA(ch, cfg.attention_head_dim)
        self.context_module = ResidualBlock(attention, nn.Identity())
        self.local_module = ResidualBlock(GLUMBConv(ch, cfg.glu_expand_ratio), nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return self.local_module(self.context_module(x))


def _block(kind: str, ch: int, cfg: DCAEConfig) -> nn.Module:
    if kind == "ResBlock":
        return ResidualBlock(ResBlock(ch), nn.Identity())
    return EfficientViTBlock(ch, cfg)


class InterpolateConv(nn.Module):
    """Nearest x2 upsampling (also in T when ``ft == 2``) followed by a 3x3x3 conv."""

    def __init__(self, in_ch: int, out_ch: int, ft: int) -> None:
        super().__init__()
        self.ft = ft
        self.conv = ConvLayer(in_ch, out_ch, 3, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """Upsample ``[B, C, T, H, W]``."""
        return self.conv(F.interpolate(x, scale_factor=(self.ft, 2, 2), mode="nearest"))


def _downsample(in_ch: int, out_ch: int, temporal: bool) -> nn.Module:
    ft = 2 if temporal else 1
    conv = ConvLayer(in_ch, out_ch, 3, stride=(ft, 2, 2), bias=True)
    return ResidualBlock(conv, SpaceToChannelAveraging(in_ch, out_ch, ft, 2))


def _upsample(in_ch: int, out_ch: int, temporal: bool) -> nn.Module:
    ft = 2 if temporal else 1
    return ResidualBlock(
        InterpolateConv(in_ch, out_ch, ft), ChannelDuplicatingToSpace(in_ch, out_ch, ft, 2)
    )


# -- encoder, decoder, model ---------------------------------------------------------------------


class Encoder(nn.Module):
    """Pixels to the latent: project_in, stages (blocks + downsampler), project_out."""

    def __init__(self, cfg: DCAEConfig) -> None:
        super().__init__()
        widths, self.cfg = cfg.width_list, cfg
        self.project_in = ConvLayer(cfg.in_channels, widths[0], 3, bias=True)
        self.stages = nn.ModuleList()
        for i, (width, depth) in enumerate(zip(widths, cfg.encoder_depth_list, strict=True)):
            ops = [_block(cfg.block_types[i], width, cfg) for _ in range(depth)]
            if i < len(widths) - 1:
                ops.append(_downsample(width, widths[i + 1], cfg.temporal_downsample[i]))
            self.stages.append(OpSequential(ops))
        out_conv = OpSequential([ConvLayer(widths[-1], cfg.latent_channels, 3, bias=True)])
        averaging = SpaceToChannelAveraging(widths[-1], cfg.latent_channels, 1, 1)
        self.project_out = ResidualBlock(out_conv, averaging)

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``[B, C, T, H, W]``."""
        x = self.project_in(x)
        for stage in self.stages:
            x = run_block(stage, x, self.cfg.gradient_checkpointing)
        return self.project_out(x)


class Decoder(nn.Module):
    """Latent to pixels: project_in, stages from deepest (upsampler + blocks), project_out."""

    def __init__(self, cfg: DCAEConfig) -> None:
        super().__init__()
        widths, self.cfg = cfg.width_list, cfg
        conv_in = ConvLayer(cfg.latent_channels, widths[-1], 3, bias=True)
        duplicating = ChannelDuplicatingToSpace(cfg.latent_channels, widths[-1], 1, 1)
        self.project_in = ResidualBlock(conv_in, duplicating)
        self.stages = nn.ModuleList()
        for i, (width, depth) in enumerate(zip(widths, cfg.decoder_depth_list, strict=True)):
            ops = []
            if i < len(widths) - 1:
                ops.append(_upsample(widths[i + 1], width, cfg.temporal_downsample[i]))
            ops += [_block(cfg.block_types[i], width, cfg) for _ in range(depth)]
            self.stages.append(OpSequential(ops))
        out_conv = ConvLayer(widths[0], cfg.in_channels, 3, bias=True)
        self.project_out = OpSequential([RMSNorm3d(widths[0]), nn.ReLU(), out_conv])

    def forward(self, z: Tensor) -> Tensor:
        """Decode ``[B, latent, T, H, W]``."""
        x = self.project_in(z)
        for stage in reversed(self.stages):
            x = run_block(stage, x, self.cfg.gradient_checkpointing)
        return self.project_out(x)


class DCAE(VideoAutoencoder):
    """Deep-compression video autoencoder (see the module docstring); deterministic."""

    config: DCAEConfig

    def __init__(self, config: DCAEConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self._check_tiling()

    @property
    def spatial_compression(self) -> int:
        """``2 ** (stages - 1)``: 32 for six stages."""
        return 2 ** (len(self.config.width_list) - 1)

    @property
    def temporal_compression(self) -> int:
        """``2 ** (temporal downsamplers)``: 4 for two."""
        return 2 ** sum(self.config.temporal_downsample)

    @property
    def is_causal(self) -> bool:
        """Never: frames are padded on both sides and ``T_lat = T // tc``."""
        return False

    def _encode_tile(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def _decode_tile(self, z: Tensor) -> Tensor:
        return self.decoder(z)
