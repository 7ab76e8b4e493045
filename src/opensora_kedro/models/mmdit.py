"""The Flux-style MMDiT diffusion transformer used by Open-Sora 2.0 (brief §6).

Image (video latent) tokens and text (T5) tokens pass through ``depth`` double-stream blocks,
in which each stream has its own weights and adaLN modulation but attention is joint, then
through ``depth_single_blocks`` single-stream blocks over ``cat(txt, img)``. Modulation comes
from the timestep (sinusoidal embedding of ``1000·t``), the pooled CLIP vector and, for
guidance-distilled models, a guidance embedding. Queries and keys are RMS-normalised and
rotated by a 3-axis RoPE over (t, h, w) patch coordinates (text tokens sit at position 0).

``build_mmdit("tiny")`` or ``build_mmdit({...model params...})`` builds a model; the parameter
file's ``type``, ``from_pretrained``, ``strict_load`` and ``use_liger_rope`` are not model
structure and are ignored here (they steer loading: :mod:`~opensora_kedro.models.mmdit_loading`).
RoPE always rotates interleaved pairs (2i, 2i+1); checkpoints trained with Open-Sora's
rotate-half convention (``use_liger_rope``) are permuted to it when they are converted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup
from torch.utils.checkpoint import checkpoint

from opensora_kedro.models import sequence_parallel as sp

logger = logging.getLogger(__name__)

TIME_EMBED_DIM = 256
TIME_FACTOR = 1000.0
# Parameter-file keys that configure loading or kernels rather than the network itself.
NON_STRUCTURAL_FIELDS = frozenset(
    {"type", "from_pretrained", "strict_load", "use_liger_rope", "lora_path"}
)


@dataclass(frozen=True)
class MMDiTConfig:
    """Configuration of :class:`MMDiT`; the defaults are Open-Sora 2.0's 11B model.

    Attributes:
        in_channels: features per image token, i.e. latent channels x ``patch_size**2``.
        vec_in_dim: width of the pooled CLIP vector.
        context_in_dim: width of the T5 token embeddings.
        hidden_size: transformer width; must equal ``num_heads * sum(axes_dim)``.
        mlp_ratio: MLP width / hidden size.
        num_heads: attention heads.
        depth: double-stream blocks.
        depth_single_blocks: single-stream blocks.
        axes_dim: RoPE dims per (t, h, w) axis (each even; they sum to the head dim).
        theta: RoPE base.
        qkv_bias: bias in the double blocks' q, k, v projections.
        guidance_embed: embed a guidance scale into the modulation vector.
        fused_qkv: one projection for q, k and v instead of three.
        cond_embed: add a zero-initialised embedding of the i2v/v2v condition.
        patch_size: spatial patch side of the latent (2 for the Hunyuan VAE, 1 for DC-AE).
        grad_ckpt_settings: checkpoint the first ``a`` double and ``b`` single blocks.
    """

    in_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, int, int] = (16, 56, 56)
    theta: int = 10000
    qkv_bias: bool = True
    guidance_embed: bool = False
    fused_qkv: bool = False
    cond_embed: bool = False
    patch_size: int = 2
    grad_ckpt_settings: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.hidden_size != self.num_heads * sum(self.axes_dim):
            raise ValueError(
                f"hidden_size {self.hidden_size} must equal num_heads * sum(axes_dim) = "
                f"{self.num_heads} * {sum(self.axes_dim)}"
            )
        if len(self.axes_dim) != 3 or any(d % 2 for d in self.axes_dim):
            raise ValueError(f"axes_dim needs three even entries, got {self.axes_dim}")
        if self.in_channels % self.patch_size**2:
            raise ValueError(
                f"in_channels {self.in_channels} must be latent channels x patch_size**2 "
                f"({self.patch_size**2})"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (peft reads a model's ``config`` through this)."""
        return dataclasses.asdict(self)

    @property
    def latent_channels(self) -> int:
        """Channels of the unpatched latent."""
        return self.in_channels // self.patch_size**2


MMDIT_SIZES: dict[str, MMDiTConfig] = {
    "open_sora_2": MMDiTConfig(),
    "tiny": MMDiTConfig(
        in_channels=16,
        vec_in_dim=64,
        context_in_dim=64,
        hidden_size=64,
        num_heads=2,
        depth=2,
        depth_single_blocks=2,
        axes_dim=(8, 12, 12),
    ),
}


def mmdit_config(config: MMDiTConfig | Mapping[str, Any] | str, **overrides: Any) -> MMDiTConfig:
    """Resolve a size name, a config or a mapping of model parameters into a config.

    A mapping may carry a ``size`` key (default ``open_sora_2``) naming the base it overrides;
    lists become tuples (parameter files give lists).

    Raises:
        ValueError: unknown size or field, or an inconsistent config.
    """
    if isinstance(config, str):
        fields: dict[str, Any] = {"size": config}
    elif isinstance(config, MMDiTConfig):
        fields = dataclasses.asdict(config)  # every field given, so the base size is moot
    else:
        fields = dict(config)
    fields.update(overrides)
    size = fields.pop("size", "open_sora_2")
    if size not in MMDIT_SIZES:
        raise ValueError(f"unknown MMDiT size {size!r}; available: {', '.join(MMDIT_SIZES)}")
    fields = {k: v for k, v in fields.items() if k not in NON_STRUCTURAL_FIELDS}
    valid = {f.name for f in dataclasses.fields(MMDiTConfig)}
    if unknown := sorted(set(fields) - valid):
        raise ValueError(f"unknown MMDiT field(s) {unknown}; valid: {', '.join(sorted(valid))}")
    coerced = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return dataclasses.replace(MMDIT_SIZES[size], **coerced)


def build_mmdit(config: MMDiTConfig | Mapping[str, Any] | str, **overrides: Any) -> MMDiT:
    """Build a randomly initialised :class:`MMDiT` (see :func:`mmdit_config` for the inputs)."""
    model = MMDiT(mmdit_config(config, **overrides))
    logger.debug("built MMDiT (%d parameters)", sum(p.numel() for p in model.parameters()))
    return model


# --------------------------------------------------------------------------- embeddings


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


class MMDiT(nn.Module):
    """Open-Sora 2.0's MMDiT: predicts the rectified-flow velocity of a video latent."""

    def __init__(self, config: MMDiTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.grad_ckpt_settings = config.grad_ckpt_settings
        self.img_in = nn.Linear(config.in_channels, dim)
        self.time_in = MLPEmbedder(TIME_EMBED_DIM, dim)
        self.vector_in = MLPEmbedder(config.vec_in_dim, dim)
        self.guidance_in = MLPEmbedder(TIME_EMBED_DIM, dim) if config.guidance_embed else None
        self.txt_in = nn.Linear(config.context_in_dim, dim)
        # One extra (mask) channel per patch pixel on top of the conditioning latent.
        self.cond_in = (
            nn.Linear(config.in_channels + config.patch_size**2, dim) if config.cond_embed else None
        )
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(config) for _ in range(config.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(config) for _ in range(config.depth_single_blocks)
        )
        self.final_layer = LastLayer(dim, config.in_channels)
        self.sp_group: ProcessGroup | None = None
        self.initialize_weights()

    def enable_sequence_parallel(self, group: ProcessGroup | None) -> None:
        """Split the image tokens over ``group`` (Ulysses all-to-all attention); ``None`` or a
        one-rank group turns it off. Ranks of the group must be given the same inputs; each
        gets the full output. Parameter gradients are scaled so that averaging them over the
        group (as HybridParallelPlugin's dp x sp group does) gives the full gradient.

        Raises:
            ValueError: ``num_heads`` is not divisible by the group size.
        """
        if group is not None and dist.get_world_size(group) == 1:
            group = None
        if group is not None and self.config.num_heads % dist.get_world_size(group):
            raise ValueError(
                f"num_heads {self.config.num_heads} must be divisible by the sequence-parallel "
                f"size {dist.get_world_size(group)}"
            )
        self.sp_group = group
        for block in [*self.double_blocks, *self.single_blocks]:
            block.sp_group = group

    def initialize_weights(self) -> None:
        """Zero the output projection (the model starts by predicting 0) and the condition
        embedder (an i2v model starts exactly as the t2v model it is fine-tuned from)."""
        zeroed = [self.final_layer.linear] + ([self.cond_in] if self.cond_in is not None else [])
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _vector(self, timesteps: Tensor, y: Tensor, guidance: Tensor | None) -> Tensor:
        vec = self.time_in(timestep_embedding(timesteps, TIME_EMBED_DIM).to(y.dtype))
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this model embeds guidance: pass `guidance`")
            vec = vec + self.guidance_in(timestep_embedding(guidance, TIME_EMBED_DIM).to(y.dtype))
        return vec + self.vector_in(y)

    def _embed_image(self, img: Tensor, cond: Tensor | None) -> Tensor:
        p = self.config.patch_size
        tokens = self.img_in(pack(img, p))
        if self.cond_in is not None:
            if cond is None:  # t2v passes an all-zero condition, as Open-Sora does
                cond = img.new_zeros(img.shape[0], img.shape[1] + 1, *img.shape[2:])
            tokens = tokens + self.cond_in(pack(cond, p))
        return tokens

    def _run(self, block: nn.Module, index: int, limit: int, *args: Any) -> Any:
        # Checkpoint only while building a graph; under no_grad it would just cost time.
        if index < limit and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(
        self,
        img: Tensor,
        txt: Tensor,
        y: Tensor,
        timesteps: Tensor,
        cond: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor:
        """Velocity ``[B, C, T, H, W]`` for the noisy latent ``img [B, C, T, H, W]``.

        Args:
            img: noisy latent.
            txt: T5 embeddings ``[B, L, context_in_dim]``.
            y: pooled CLIP vector ``[B, vec_in_dim]``.
            timesteps: ``[B]`` in [0, 1] (1 = noise).
            cond: mask channel + masked conditioning latent ``[B, C + 1, T, H, W]``; used
                only when ``cond_embed`` (``None`` there means no condition).
            guidance: ``[B]`` guidance scale; required only when ``guidance_embed``.
        """
        b, c, t, h, w = img.shape
        if c != self.config.latent_channels:
            raise ValueError(f"expected {self.config.latent_channels} latent channels, got {c}")
        p = self.config.patch_size
        img_tokens = self._embed_image(img, cond)
        vec = self._vector(timesteps, y, guidance)
        txt_tokens = self.txt_in(txt)
        img_ids = image_position_ids(b, t, math.ceil(h / p), math.ceil(w / p)).to(img.device)
        txt_ids = img_ids.new_zeros(b, txt.shape[1], 3)
        pe = rope_frequencies(
            torch.cat([txt_ids, img_ids], 1), self.config.axes_dim, self.config.theta
        )
        if self.sp_group is not None:  # this rank's image tokens; pe stays whole (see sp)
            img_tokens = sp.split_sequence(img_tokens, self.sp_group)
        n_double, n_single = self.grad_ckpt_settings or (0, 0)
        for i, block in enumerate(self.double_blocks):
            img_tokens, txt_tokens = self._run(block, i, n_double, img_tokens, txt_tokens, vec, pe)
        x = torch.cat([txt_tokens, img_tokens], dim=1)
        for i, block in enumerate(self.single_blocks):
            x = self._run(block, i, n_single, x, vec, pe, txt.shape[1])
        out = self.final_layer(x[:, txt.shape[1] :], vec)
        if self.sp_group is not None:
            scale = dist.get_world_size(self.sp_group)
            out = sp.gather_sequence(out, self.sp_group, img_ids.shape[1], grad_scale=scale)
        return unpack(out, p, t, h, w)
