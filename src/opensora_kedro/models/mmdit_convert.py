"""Open-Sora 2.0 / Flux-format MMDiT checkpoints in this project's layout (brief §14).

Open-Sora's ``flux`` model (and FLUX.1 itself) names and fuses its tensors differently:

=============================================  ===========================================
Open-Sora / Flux                               here
=============================================  ===========================================
``double_blocks.N.img_mod.lin``                ``double_blocks.N.img_mod``
``double_blocks.N.img_attn.{q,k,v}_proj``      ``double_blocks.N.img_qkv.{q,k,v}_proj``
``double_blocks.N.img_attn.qkv`` (fused)       split into q, k, v (or ``img_qkv.qkv``)
``double_blocks.N.img_attn.norm.query_norm``   ``double_blocks.N.img_qkv.query_norm``
``double_blocks.N.img_attn.proj``              ``double_blocks.N.img_proj``
``single_blocks.N.linear1`` (q, k, v, mlp-in)  ``single_blocks.N.qkv.*`` + ``mlp_in``
``single_blocks.N.{q_proj,k_proj,v_mlp}``      ``single_blocks.N.qkv.*`` + ``mlp_in``
``single_blocks.N.norm.query_norm``            ``single_blocks.N.qkv.query_norm``
``single_blocks.N.modulation.lin``             ``single_blocks.N.modulation``
``final_layer.adaLN_modulation.1``             ``final_layer.adaLN_modulation``
=============================================  ===========================================

(``txt_*`` like ``img_*``; embedders, MLPs, ``linear2`` and ``final_layer.linear`` keep
their names.) This model always rotates RoPE pairs (2i, 2i+1); a checkpoint trained with
``use_liger_rope=True`` (every Open-Sora 2.0 config) rotates (i, i + head_dim/2). The two
agree once each head's q and k rows and QK-norm scales are permuted, new[2i] = old[i] and
new[2i+1] = old[i + head_dim/2], which the conversion does. v is never permuted.

A conversion is a *plan*: for each of our tensors, the pieces of foreign tensors (row ranges)
it is concatenated from, so a loader or writer can build one tensor at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from opensora_kedro.models.mmdit import MMDiT, MMDiTConfig

_FOREIGN_MARKERS = re.compile(
    r"^(double_blocks\.\d+\.(img|txt)_(attn|mod\.lin)\.|single_blocks\.\d+\.(linear1|v_mlp|"
    r"norm\.|modulation\.lin)|final_layer\.adaLN_modulation\.1\.)"
)
_DOUBLE = re.compile(r"^double_blocks\.(\d+)\.(img|txt)_(.+)$")
_SINGLE = re.compile(r"^single_blocks\.(\d+)\.(.+)$")
_QKV_PART = {"q_proj": 0, "k_proj": 1, "v_proj": 2}


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model (missing, unexpected or misshapen keys)."""


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, end)`` of a source tensor (all rows when ``rows`` is None), permuted per
    head from rotate-half to interleaved order when ``permute``."""

    key: str
    rows: tuple[int, int] | None = None
    permute: bool = False


Plan = dict[str, tuple[Piece, ...]]


def is_foreign_format(keys: Iterable[str]) -> bool:
    """Whether state-dict ``keys`` are Open-Sora's / Flux's MMDiT names rather than ours."""
    return any(_FOREIGN_MARKERS.match(key) for key in keys)


def rotate_half_to_interleaved(tensor: Tensor, head_dim: int) -> Tensor:
    """Permute rows (dimension 0) of each ``head_dim`` group: new[2i] = old[i] and
    new[2i+1] = old[i + head_dim/2]."""
    heads = tensor.shape[0] // head_dim
    split = tensor.reshape(heads, 2, head_dim // 2, *tensor.shape[1:])
    return split.transpose(1, 2).reshape(tensor.shape)


def target_shapes(config: MMDiTConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every tensor of our model for ``config``: ``name -> (shape, dtype)`` (built on meta)."""
    with torch.device("meta"):
        model = MMDiT(config)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def conversion_plan(config: MMDiTConfig, source_keys: Iterable[str], liger_rope: bool) -> Plan:
    """Pieces of a foreign checkpoint (with ``source_keys``) that make each of our tensors.

    ``liger_rope``: the checkpoint rotates RoPE pairs (i, i + head_dim/2) (Open-Sora's
    ``use_liger_rope=True``); False for FLUX.1's own interleaved convention.

    Raises:
        CheckpointMismatchError: naming the missing and the unexpected source keys.
    """
    source = set(source_keys)
    planner = _Planner(config, source, liger_rope)
    plan = {key: planner.pieces(key) for key in target_shapes(config)}
    check_keys(plan, source)
    return plan


def identity_plan(keys: Iterable[str]) -> Plan:
    """The plan of a checkpoint already in our layout."""
    return {key: (Piece(key),) for key in keys}


def check_keys(plan: Plan, source: set[str]) -> None:
    """Fail naming every source key the plan needs but lacks, and every one it leaves unused."""
    needed = {piece.key for pieces in plan.values() for piece in pieces}
    missing, unexpected = sorted(needed - source), sorted(source - needed)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"checkpoint does not fit the model: missing {_listing(missing)}; "
            f"unexpected {_listing(unexpected)}"
        )


def _listing(keys: list[str], limit: int = 30) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} key(s): {shown}" + (
        f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    )


class _Planner:
    """Maps one of our tensor names to the pieces of the foreign checkpoint it comes from."""

    def __init__(self, config: MMDiTConfig, source: set[str], liger_rope: bool) -> None:
        self.dim = config.hidden_size
        self.mlp = int(config.hidden_size * config.mlp_ratio)
        self.source, self.permute = source, liger_rope

    def pieces(self, key: str) -> tuple[Piece, ...]:
        if key.startswith("final_layer.adaLN_modulation."):
            return (Piece(key.replace("adaLN_modulation.", "adaLN_modulation.1.")),)
        if match := _DOUBLE.match(key):
            return self._double(f"double_blocks.{match[1]}.{match[2]}", match[3])
        if match := _SINGLE.match(key):
            return self._single(f"single_blocks.{match[1]}", match[2])
        return (Piece(key),)

    def _double(self, prefix: str, rest: str) -> tuple[Piece, ...]:
        head, _, param = rest.partition(".")
        if head in ("mod", "proj"):
            return (Piece(f"{prefix}_{'mod.lin' if head == 'mod' else 'attn.proj'}.{param}"),)
        if head != "qkv":  # mlp.{0,2}.*
            return (Piece(f"{prefix}_{rest}"),)
        part, _, param = param.partition(".")
        if part.endswith("_norm"):
            return (Piece(f"{prefix}_attn.norm.{part}.{param}", permute=self.permute),)
        fused = f"{prefix}_attn.qkv.{param}"
        parts = [part] if part in _QKV_PART else list(_QKV_PART)
        if fused in self.source:
            return tuple(self._rows(fused, name, _QKV_PART[name] * self.dim) for name in parts)
        return tuple(self._rows(f"{prefix}_attn.{name}.{param}", name) for name in parts)

    def _single(self, prefix: str, rest: str) -> tuple[Piece, ...]:
        head, _, param = rest.partition(".")
        if head == "modulation":
            return (Piece(f"{prefix}.modulation.lin.{param}"),)
        fused = f"{prefix}.linear1.{param.rpartition('.')[2]}"
        if head == "mlp_in":
            if fused in self.source:
                return (Piece(fused, (3 * self.dim, 3 * self.dim + self.mlp)),)
            return (Piece(f"{prefix}.v_mlp.{param}", (self.dim, self.dim + self.mlp)),)
        if head != "qkv":  # linear2.*
            return (Piece(f"{prefix}.{rest}"),)
        part, _, param = param.partition(".")
        if part.endswith("_norm"):
            return (Piece(f"{prefix}.norm.{part}.{param}", permute=self.permute),)
        parts = [part] if part in _QKV_PART else list(_QKV_PART)
        if fused in self.source:
            return tuple(self._rows(fused, name, _QKV_PART[name] * self.dim) for name in parts)
        unfused = {"q_proj": f"{prefix}.q_proj.{param}", "k_proj": f"{prefix}.k_proj.{param}",
                   "v_proj": f"{prefix}.v_mlp.{param}"}  # fmt: skip
        return tuple(self._rows(unfused[name], name, 0) for name in parts)

    def _rows(self, key: str, part: str, start: int | None = None) -> Piece:
        """``part`` (q, k or v) of ``key``: rows from ``start`` (all rows when None)."""
        rows = None if start is None else (start, start + self.dim)
        return Piece(key, rows, permute=self.permute and part != "v_proj")


def infer_config(
    shapes: dict[str, tuple[int, ...]],
    axes_dim: tuple[int, int, int] | None = None,
    theta: int = 10000,
    patch_size: int | None = None,
) -> MMDiTConfig:
    """The structure of a foreign checkpoint from its tensor shapes (our unfused layout).

    ``axes_dim`` defaults to Open-Sora's (16, 56, 56) for 128-dim heads; ``patch_size``
    comes from ``cond_in`` when there is one, else defaults to 2. Neither, nor ``theta``,
    can be read from the weights.

    Raises:
        ValueError: the shapes are not an MMDiT's, or ``axes_dim`` is needed and not given.
    """
    if "img_in.weight" not in shapes:
        raise ValueError("not an MMDiT checkpoint: no img_in.weight")
    hidden, in_channels = shapes["img_in.weight"]
    depth = len({k.split(".")[1] for k in shapes if k.startswith("double_blocks.")})
    single = len({k.split(".")[1] for k in shapes if k.startswith("single_blocks.")})
    norms = [v[0] for k, v in shapes.items() if k.endswith("query_norm.scale")]
    head_dim = norms[0] if norms else sum(axes_dim or (16, 56, 56))
    if axes_dim is None:
        if head_dim != 128:
            raise ValueError(f"head dim {head_dim}: give the RoPE axes_dim (they sum to it)")
        axes_dim = (16, 56, 56)
    if "double_blocks.0.img_mlp.0.weight" in shapes:
        mlp = shapes["double_blocks.0.img_mlp.0.weight"][0]
    elif "single_blocks.0.linear1.weight" in shapes:
        mlp = shapes["single_blocks.0.linear1.weight"][0] - 3 * hidden
    else:
        mlp = shapes.get("single_blocks.0.v_mlp.weight", (5 * hidden,))[0] - hidden
    cond = shapes.get("cond_in.weight")
    if cond is not None:
        patch_size = round((cond[1] - in_channels) ** 0.5)
    bias = depth == 0 or any(
        k in shapes
        for k in ("double_blocks.0.img_attn.qkv.bias", "double_blocks.0.img_attn.q_proj.bias")
    )
    return MMDiTConfig(
        in_channels=in_channels, vec_in_dim=shapes["vector_in.in_layer.weight"][1],
        context_in_dim=shapes["txt_in.weight"][1], hidden_size=hidden, mlp_ratio=mlp / hidden,
        num_heads=hidden // head_dim, depth=depth, depth_single_blocks=single,
        axes_dim=tuple(axes_dim), theta=theta, qkv_bias=bias,
        guidance_embed="guidance_in.in_layer.weight" in shapes, fused_qkv=False,
        cond_embed=cond is not None, patch_size=patch_size or 2,
    )  # fmt: skip
