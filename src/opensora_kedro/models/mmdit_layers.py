"""The MMDiT's building blocks (Flux's layers): timestep and RoPE embeddings, joint
attention, the double- and single-stream blocks, the output layer, patch packing."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup

from opensora_kedro.models import sequence_parallel as sp

if TYPE_CHECKING:
    from opensora_kedro.models.mmdit import MMDiTConfig

TIME_EMBED_DIM = 256
TIME_FACTOR = 1000.0


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Flux's sinusoidal embedding ``[cos, sin]`` of ``1000·t`` -> ``[B, dim]``."""
    t = TIME_FACTOR * t.float()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def image_position_ids(batch: int, frames: int, height: int, width: int) -> Tensor:
    """Integer (t, h, w) patch coordinates of every image token -> ``[B, T·h·w, 3]``."""
    grid = torch.meshgrid(
        torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"
    )
    ids = torch.stack(grid, dim=-1).reshape(1, -1, 3).float()
    return ids.expand(batch, -1, -1)


def rope(pos: Tensor, dim: int, theta: int) -> Tensor:
    """Rotation matrices ``[B, N, dim/2, 2, 2]`` for positions ``[B, N]`` on one axis."""
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / theta**scale
    angles = pos.double()[..., None] * omega
    out = torch.stack([angles.cos(), -angles.sin(), angles.sin(), angles.cos()], dim=-1)
    return out.reshape(*angles.shape, 2, 2).float()


def rope_frequencies(ids: Tensor, axes_dim: tuple[int, ...], theta: int) -> Tensor:
    """3-axis RoPE for ``ids [B, N, 3]`` -> ``[B, 1, N, head_dim/2, 2, 2]``."""
    per_axis = [rope(ids[..., i], d, theta) for i, d in enumerate(axes_dim)]
    return torch.cat(per_axis, dim=-3).unsqueeze(1)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate consecutive pairs of ``x [B, H, N, D]`` by ``freqs`` (computed in float32)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs[..., 0] * pairs[..., 0] + freqs[..., 1] * pairs[..., 1]
    return out.reshape(*x.shape).type_as(x)


def attention(q: Tensor, k: Tensor, v: Tensor, pe: Tensor) -> Tensor:
    """RoPE then unmasked SDPA over ``[B, H, N, D]`` -> ``[B, N, H·D]``."""
    q, k = apply_rope(q, pe), apply_rope(k, pe)
    x = F.scaled_dot_product_attention(q, k, v)
    return x.transpose(1, 2).flatten(2)


def joint_attention(
    q: Tensor, k: Tensor, v: Tensor, pe: Tensor, txt_len: int, group: ProcessGroup | None
) -> Tensor:
    """:func:`attention` over ``cat(txt, img)``; with a sequence-parallel ``group`` the image
    tokens are this rank's slice and ``pe`` covers the full (unpadded) sequence."""
    if group is None:
        return attention(q, k, v, pe)
    return sp.ulysses_attention(
        q, k, v, txt_len, pe.shape[2], group, lambda *qkv: attention(*qkv, pe)
    )


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear, embedding a vector into the hidden width."""

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim)
        self.out_layer = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Embed ``x [B, in_dim]``."""
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMS normalisation with a learned scale, computed in float32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the last dimension of ``x``."""
        xf = x.float()
        rrms = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (xf * rrms).type_as(x) * self.scale


class QKV(nn.Module):
    """q, k, v projections (fused or separate) followed by QK RMSNorm, split into heads."""

    def __init__(self, dim: int, num_heads: int, bias: bool, fused: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.fused = fused
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=bias)
            self.k_proj = nn.Linear(dim, dim, bias=bias)
            self.v_proj = nn.Linear(dim, dim, bias=bias)
        head_dim = dim // num_heads
        self.query_norm, self.key_norm = RMSNorm(head_dim), RMSNorm(head_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x [B, N, dim]`` -> q, k, v each ``[B, H, N, D]``."""
        if self.fused:
            parts = self.qkv(x).chunk(3, dim=-1)
        else:
            parts = (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        q, k, v = (p.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for p in parts)
        return self.query_norm(q).to(v), self.key_norm(k).to(v), v


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``(1 + scale)·x + shift`` with per-sample ``shift, scale [B, 1, dim]``."""
    return (1 + scale) * x + shift


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
    )


# --------------------------------------------------------------------------- blocks


class DoubleStreamBlock(nn.Module):
    """Separate weights and modulation for image and text; joint attention over both."""

    def __init__(self, config: MMDiTConfig) -> None:
        super().__init__()
        dim, mlp_hidden = config.hidden_size, int(config.hidden_size * config.mlp_ratio)
        for stream in ("img", "txt"):
            self.add_module(f"{stream}_mod", nn.Linear(dim, 6 * dim))
            self.add_module(f"{stream}_norm1", _layer_norm(dim))
            self.add_module(
                f"{stream}_qkv", QKV(dim, config.num_heads, config.qkv_bias, config.fused_qkv)
            )
            self.add_module(f"{stream}_proj", nn.Linear(dim, dim))
            self.add_module(f"{stream}_norm2", _layer_norm(dim))
            self.add_module(f"{stream}_mlp", _mlp(dim, mlp_hidden))
        self.sp_group: ProcessGroup | None = None  # set by MMDiT.enable_sequence_parallel

    def _pre(self, stream: str, x: Tensor, vec: Tensor) -> tuple[tuple[Tensor, ...], ...]:
        mod = getattr(self, f"{stream}_mod")(F.silu(vec))[:, None].chunk(6, dim=-1)
        x_mod = modulate(getattr(self, f"{stream}_norm1")(x), mod[0], mod[1])
        return getattr(self, f"{stream}_qkv")(x_mod), mod

    def _post(self, stream: str, x: Tensor, attn: Tensor, mod: tuple[Tensor, ...]) -> Tensor:
        x = x + mod[2] * getattr(self, f"{stream}_proj")(attn)
        x_mod = modulate(getattr(self, f"{stream}_norm2")(x), mod[3], mod[4])
        return x + mod[5] * getattr(self, f"{stream}_mlp")(x_mod)

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor) -> tuple[Tensor, Tensor]:
        """Update ``img [B, N, dim]`` and ``txt [B, L, dim]``; ``pe`` covers ``cat(txt, img)``."""
        (iq, ik, iv), img_mod = self._pre("img", img, vec)
        (tq, tk, tv), txt_mod = self._pre("txt", txt, vec)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((tq, iq), (tk, ik), (tv, iv)))
        txt_len = txt.shape[1]
        attn = joint_attention(q, k, v, pe, txt_len, self.sp_group)
        img = self._post("img", img, attn[:, txt_len:], img_mod)
        txt = self._post("txt", txt, attn[:, :txt_len], txt_mod)
        return img, txt


class SingleStreamBlock(nn.Module):
    """One stream over ``cat(txt, img)``: attention and MLP in parallel from one modulation."""

    def __init__(self, config: MMDiTConfig) -> None:
        super().__init__()
        dim, mlp_hidden = config.hidden_size, int(config.hidden_size * config.mlp_ratio)
        self.modulation = nn.Linear(dim, 3 * dim)
        self.pre_norm = _layer_norm(dim)
        self.qkv = QKV(dim, config.num_heads, bias=True, fused=config.fused_qkv)
        self.mlp_in = nn.Linear(dim, mlp_hidden)
        self.linear2 = nn.Linear(dim + mlp_hidden, dim)
        self.sp_group: ProcessGroup | None = None  # set by MMDiT.enable_sequence_parallel

    def forward(self, x: Tensor, vec: Tensor, pe: Tensor, txt_len: int = 0) -> Tensor:
        """Update ``x [B, L + N, dim]`` (``txt_len`` = L matters only with sequence parallelism)."""
        shift, scale, gate = self.modulation(F.silu(vec))[:, None].chunk(3, dim=-1)
        x_mod = modulate(self.pre_norm(x), shift, scale)
        attn = joint_attention(*self.qkv(x_mod), pe, txt_len, self.sp_group)
        mlp = F.gelu(self.mlp_in(x_mod), approximate="tanh")
        return x + gate * self.linear2(torch.cat([attn, mlp], dim=-1))


class LastLayer(nn.Module):
    """adaLN (shift, scale) from the vector, then a linear map back to token features."""

    def __init__(self, dim: int, out_features: int) -> None:
        super().__init__()
        self.norm_final = _layer_norm(dim)
        self.adaLN_modulation = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, out_features)

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        """Project ``x [B, N, dim]`` to ``[B, N, out_features]``."""
        shift, scale = self.adaLN_modulation(F.silu(vec))[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# --------------------------------------------------------------------------- model


def pack(x: Tensor, patch: int) -> Tensor:
    """``[B, C, T, H, W]`` -> ``[B, T·⌈H/p⌉·⌈W/p⌉, C·p·p]`` (zero-padding H and W up to p)."""
    pad_h, pad_w = -x.shape[-2] % patch, -x.shape[-1] % patch
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 3, 5, 1, 4, 6).reshape(b, t * (h // patch) * (w // patch), -1)


def unpack(x: Tensor, patch: int, frames: int, height: int, width: int) -> Tensor:
    """Invert :func:`pack` to ``[B, C, T, H, W]`` (cropping any padding)."""
    hp, wp = math.ceil(height / patch), math.ceil(width / patch)
    b = x.shape[0]
    x = x.reshape(b, frames, hp, wp, -1, patch, patch).permute(0, 4, 1, 2, 5, 3, 6)
    return x.reshape(b, -1, frames, hp * patch, wp * patch)[..., :height, :width]
