"""The Flux-style MMDiT diffusion transformer used by Open-Sora 2.0 (brief §6).

Image (video latent) tokens and text (T5) tokens pass through ``depth`` double-stream blocks,
in which each stream has its own weights and adaLN modulation but attention is joint, then
through ``depth_single_blocks`` single-stream blocks over ``cat(txt, img)``. Modulation comes
from the timestep (sinusoidal embedding of ``1000·t``), the pooled CLIP vector and, for
guidance-distilled models, a guidance embedding. Queries and keys are RMS-normalised and
rotated by a 3-axis RoPE over (t, h, w) patch coordinates (text tokens sit at position 0).
The blocks are in :mod:`~opensora_kedro.models.mmdit_layers`; this module holds the config,
the registry of named sizes and the model.

:func:`config_from_params` turns a parameter group's validated ``model``
(:class:`~opensora_kedro.models.params.MMDiTParams`) into the model's own
:class:`MMDiTConfig`; ``build_mmdit("tiny")`` or ``build_mmdit({...config fields...})`` builds
a model of a registered size (tests, benchmarks) or of a saved ``config.json``, whose
``type``, ``from_pretrained``, ``strict_load``, ``use_liger_rope`` and ``lora_path`` are not
model structure and are ignored (they steer loading:
:mod:`~opensora_kedro.models.mmdit_loading`).
RoPE always rotates interleaved pairs (2i, 2i+1); checkpoints trained with Open-Sora's
rotate-half convention (``use_liger_rope``) are permuted to it when they are converted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed import ProcessGroup
from torch.utils.checkpoint import checkpoint

from opensora_kedro.models import sequence_parallel as sp
from opensora_kedro.models.mmdit_layers import (
    TIME_EMBED_DIM,
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    SingleStreamBlock,
    image_position_ids,
    pack,
    rope_frequencies,
    timestep_embedding,
    unpack,
)
from opensora_kedro.models.params import hidden_size_rule

if TYPE_CHECKING:
    from opensora_kedro.models.params import MMDiTParams

logger = logging.getLogger(__name__)

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
        if rule := hidden_size_rule(self.hidden_size, self.num_heads, self.axes_dim):
            raise ValueError(f"hidden_size {self.hidden_size} {rule}")
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


def config_from_params(
    params: MMDiTParams, grad_ckpt_settings: tuple[int, int] | None = None
) -> MMDiTConfig:
    """The :class:`MMDiTConfig` of a parameter group's validated ``model``, checkpointing the
    first ``grad_ckpt_settings = (a, b)`` double and single blocks (None: none). Every field
    is the schema's (its defaults are :data:`MMDIT_SIZES`' ``open_sora_2``); the loading
    fields (``from_pretrained``, ``strict_load``, ``use_liger_rope``, ``lora_path``) are not
    structure and stay with the parameters.

    Raises:
        ValueError: an inconsistent config (see :meth:`MMDiTConfig.__post_init__`).
    """
    return MMDiTConfig(
        in_channels=params.in_channels,
        vec_in_dim=params.vec_in_dim,
        context_in_dim=params.context_in_dim,
        hidden_size=params.hidden_size,
        mlp_ratio=params.mlp_ratio,
        num_heads=params.num_heads,
        depth=params.depth,
        depth_single_blocks=params.depth_single_blocks,
        axes_dim=tuple(params.axes_dim),
        theta=params.theta,
        qkv_bias=params.qkv_bias,
        guidance_embed=params.guidance_embed,
        fused_qkv=params.fused_qkv,
        cond_embed=params.cond_embed,
        patch_size=params.patch_size,
        grad_ckpt_settings=tuple(grad_ckpt_settings) if grad_ckpt_settings else None,
    )


def mmdit_config(config: MMDiTConfig | Mapping[str, Any] | str, **overrides: Any) -> MMDiTConfig:
    """Resolve a size name, a config or a mapping of config fields (a saved ``config.json``,
    a test's or benchmark's dict) into a config; a parameter group's ``model`` goes through
    :func:`config_from_params`.

    A mapping may carry a ``size`` key (default ``open_sora_2``) naming the base it overrides;
    lists become tuples (JSON gives lists); loading fields (:data:`NON_STRUCTURAL_FIELDS`, which
    an exported ``config.json`` holds) are ignored.

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
