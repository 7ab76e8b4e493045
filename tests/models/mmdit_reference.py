"""Open-Sora 2.0's MMDiT checkpoint layout, built from the published facts (brief §6, §14),
and a plain functional forward pass over such a state dict, independent of our model classes.

Shared with the conversion tests and the memory benchmark.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from opensora_kedro.models.mmdit import MMDiTConfig
from opensora_kedro.models.mmdit_layers import image_position_ids, pack, timestep_embedding, unpack


def foreign_shapes(config: MMDiTConfig, fused: bool) -> dict[str, tuple[int, ...]]:
    """Every tensor of an Open-Sora-format checkpoint of ``config``: name -> shape."""
    d, m, hd = config.hidden_size, int(config.hidden_size * config.mlp_ratio), sum(config.axes_dim)
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, out: int, inp: int, bias: bool = True) -> None:
        shapes[f"{name}.weight"] = (out, inp)
        if bias:
            shapes[f"{name}.bias"] = (out,)

    linear("img_in", d, config.in_channels)
    for name, inp in (("time_in", 256), ("vector_in", config.vec_in_dim)) + (
        (("guidance_in", 256),) if config.guidance_embed else ()
    ):
        linear(f"{name}.in_layer", d, inp)
        linear(f"{name}.out_layer", d, d)
    linear("txt_in", d, config.context_in_dim)
    if config.cond_embed:
        linear("cond_in", d, config.in_channels + config.patch_size**2)
    for n in range(config.depth):
        for s in ("img", "txt"):
            p = f"double_blocks.{n}.{s}"
            linear(f"{p}_mod.lin", 6 * d, d)
            if fused:
                linear(f"{p}_attn.qkv", 3 * d, d, config.qkv_bias)
            else:
                for x in "qkv":
                    linear(f"{p}_attn.{x}_proj", d, d, config.qkv_bias)
            shapes[f"{p}_attn.norm.query_norm.scale"] = shapes[f"{p}_attn.norm.key_norm.scale"] = (
                hd,
            )
            linear(f"{p}_attn.proj", d, d)
            linear(f"{p}_mlp.0", m, d)
            linear(f"{p}_mlp.2", d, m)
    for n in range(config.depth_single_blocks):
        p = f"single_blocks.{n}"
        linear(f"{p}.modulation.lin", 3 * d, d)
        if fused:
            linear(f"{p}.linear1", 3 * d + m, d)
        else:
            linear(f"{p}.q_proj", d, d)
            linear(f"{p}.k_proj", d, d)
            linear(f"{p}.v_mlp", d + m, d)
        shapes[f"{p}.norm.query_norm.scale"] = shapes[f"{p}.norm.key_norm.scale"] = (hd,)
        linear(f"{p}.linear2", d, d + m)
    linear("final_layer.adaLN_modulation.1", 2 * d, d)
    linear("final_layer.linear", config.in_channels, d)
    return shapes


def foreign_state(config: MMDiTConfig, fused: bool, seed: int = 0) -> dict[str, Tensor]:
    """Random weights in Open-Sora's layout (norm scales near 1, the rest small)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in foreign_shapes(config, fused).items():
        values = torch.randn(shape, generator=g) * 0.2
        state[key] = values + 1 if key.endswith(".scale") else values
    return state


# --------------------------------------------------------------------------- reference forward


def _linear(sd: dict, name: str, x: Tensor) -> Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def _rms(x: Tensor, scale: Tensor) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * scale


def _cos_sin(ids: Tensor, config: MMDiTConfig) -> tuple[Tensor, Tensor]:
    """Angles ``[B, 1, N, head_dim/2]``: pair i turns by frequency i of the (t, h, w) table."""
    angles = []
    for axis, dim in enumerate(config.axes_dim):
        omega = 1.0 / config.theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles.append(ids[..., axis].double()[..., None] * omega)
    a = torch.cat(angles, -1)[:, None]
    return a.cos().float(), a.sin().float()


def _rope(x: Tensor, cos: Tensor, sin: Tensor, rotate_half: bool) -> Tensor:
    if rotate_half:  # pairs (i, i + D/2): Open-Sora's use_liger_rope
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # pairs (2i, 2i+1): Flux
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)


def _heads(x: Tensor, heads: int) -> Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _attend(q, k, v, norm: str, sd: dict, pe, rotate_half: bool) -> Tensor:
    q = _rope(_rms(q, sd[f"{norm}.query_norm.scale"]), *pe, rotate_half)
    k = _rope(_rms(k, sd[f"{norm}.key_norm.scale"]), *pe, rotate_half)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)


def _modulated(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return (1 + scale) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift


def _qkv(sd: dict, prefix: str, x: Tensor, d: int) -> tuple[Tensor, Tensor, Tensor]:
    if f"{prefix}.qkv.weight" in sd:
        return _linear(sd, f"{prefix}.qkv", x).split(d, dim=-1)
    return tuple(_linear(sd, f"{prefix}.{n}_proj", x) for n in "qkv")


def _double(sd, n, img, txt, vec, pe, cfg, rotate_half):
    d, heads, txt_len = cfg.hidden_size, cfg.num_heads, txt.shape[1]
    mods, parts = {}, {}
    for s, x in (("txt", txt), ("img", img)):
        p = f"double_blocks.{n}.{s}"
        mods[s] = _linear(sd, f"{p}_mod.lin", F.silu(vec))[:, None].chunk(6, -1)
        q, k, v = (_heads(t, heads) for t in _qkv(sd, f"{p}_attn", _modulated(x, *mods[s][:2]), d))
        norm = f"{p}_attn.norm"  # each stream's own QK-norm scales
        parts[s] = (
            _rms(q, sd[f"{norm}.query_norm.scale"]),
            _rms(k, sd[f"{norm}.key_norm.scale"]),
            v,
        )
    q, k, v = (torch.cat([parts["txt"][i], parts["img"][i]], 2) for i in range(3))
    q, k = _rope(q, *pe, rotate_half), _rope(k, *pe, rotate_half)
    attn = (
        (((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])).softmax(-1) @ v)
        .transpose(1, 2)
        .flatten(2)
    )
    out = {}
    for s, x, a in (("txt", txt, attn[:, :txt_len]), ("img", img, attn[:, txt_len:])):
        p, m = f"double_blocks.{n}.{s}", mods[s]
        x = x + m[2] * _linear(sd, f"{p}_attn.proj", a)
        hidden = F.gelu(_linear(sd, f"{p}_mlp.0", _modulated(x, m[3], m[4])), approximate="tanh")
        out[s] = x + m[5] * _linear(sd, f"{p}_mlp.2", hidden)
    return out["img"], out["txt"]


def _single(sd, n, x, vec, pe, cfg, rotate_half):
    d, heads, p = cfg.hidden_size, cfg.num_heads, f"single_blocks.{n}"
    shift, scale, gate = _linear(sd, f"{p}.modulation.lin", F.silu(vec))[:, None].chunk(3, -1)
    x_mod = _modulated(x, shift, scale)
    if f"{p}.linear1.weight" in sd:
        q, k, v, mlp = _linear(sd, f"{p}.linear1", x_mod).split(
            [d, d, d, int(d * cfg.mlp_ratio)], -1
        )
    else:
        q, k = _linear(sd, f"{p}.q_proj", x_mod), _linear(sd, f"{p}.k_proj", x_mod)
        v, mlp = _linear(sd, f"{p}.v_mlp", x_mod).split([d, int(d * cfg.mlp_ratio)], -1)
    attn = _attend(
        _heads(q, heads), _heads(k, heads), _heads(v, heads), f"{p}.norm", sd, pe, rotate_half
    )
    return x + gate * _linear(
        sd, f"{p}.linear2", torch.cat([attn, F.gelu(mlp, approximate="tanh")], -1)
    )


def _embed(sd: dict, name: str, v: Tensor) -> Tensor:
    return _linear(sd, f"{name}.out_layer", F.silu(_linear(sd, f"{name}.in_layer", v)))


def reference_forward(
    sd, cfg: MMDiTConfig, img, txt, y, t, cond=None, guidance=None, rotate_half=True
):
    """Open-Sora's MMDiT forward computed directly from its state dict ``sd``."""
    b, _, frames, h, w = img.shape
    p = cfg.patch_size
    x = _linear(sd, "img_in", pack(img, p))
    if "cond_in.weight" in sd:
        x = x + _linear(sd, "cond_in", pack(cond, p))
    vec = _embed(sd, "time_in", timestep_embedding(t, 256)) + _embed(sd, "vector_in", y)
    if "guidance_in.in_layer.weight" in sd:
        vec = vec + _embed(sd, "guidance_in", timestep_embedding(guidance, 256))
    txt = _linear(sd, "txt_in", txt)
    img_ids = image_position_ids(b, frames, math.ceil(h / p), math.ceil(w / p))
    pe = _cos_sin(torch.cat([img_ids.new_zeros(b, txt.shape[1], 3), img_ids], 1), cfg)
    for n in range(cfg.depth):
        x, txt = _double(sd, n, x, txt, vec, pe, cfg, rotate_half)
    seq = torch.cat([txt, x], 1)
    for n in range(cfg.depth_single_blocks):
        seq = _single(sd, n, seq, vec, pe, cfg, rotate_half)
    shift, scale = _linear(sd, "final_layer.adaLN_modulation.1", F.silu(vec))[:, None].chunk(2, -1)
    out = _linear(sd, "final_layer.linear", _modulated(seq[:, txt.shape[1] :], shift, scale))
    return unpack(out, p, frames, h, w)
