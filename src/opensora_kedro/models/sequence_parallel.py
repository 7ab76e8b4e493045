"""Ulysses (all-to-all) sequence parallelism: autograd-aware collectives and joint attention.

Each rank of a sequence-parallel (sp) group holds ``1/sp`` of the image tokens and all the
text tokens. Attention moves image q/k/v from (local tokens, all heads) to (all tokens,
``heads/sp``) with one all-to-all, runs over ``cat(txt, img)`` for the local heads, and moves
the output back; text takes this rank's head slice and its output is gathered over heads.

Uneven lengths: :func:`split_sequence` pads the image tokens to a multiple of ``sp`` (video
token counts vary per bucket). The padding sits at the end of the full sequence, so
:func:`ulysses_attention` crops it off before attention and pads the output back with
zeros: padded tokens never reach a real token, and attention stays unmasked (the fast
kernels still apply).

Gradient convention: replicated work (text stream, modulation vector) is done on every
rank, but each rank's backward only carries its own share, so the local parameter gradients
of the sp ranks *sum* to the full gradient. :func:`gather_sequence` scales the gradient by
``grad_scale`` (``sp`` in the model) so that *averaging* over the sp group gives the full
gradient, as ColossalAI's HybridParallelPlugin does over its dp x sp group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.distributed import ProcessGroup

logger = logging.getLogger(__name__)


def padded_length(length: int, sp: int) -> int:
    """``length`` rounded up to a multiple of ``sp``."""
    return -(-length // sp) * sp


def _all_to_all(x: Tensor, group: ProcessGroup, scatter_dim: int, gather_dim: int) -> Tensor:
    """Chunk ``x`` along ``scatter_dim`` across the group; concatenate received chunks along
    ``gather_dim``. ``all_to_all_single`` is used because gloo (CPU) implements it."""
    world = dist.get_world_size(group)
    send = torch.stack(x.chunk(world, dim=scatter_dim))
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    return torch.cat(received.unbind(0), dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup, scatter_dim: int, gather_dim: int) -> Tensor:
        ctx.group, ctx.dims = group, (scatter_dim, gather_dim)
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad.contiguous(), ctx.group, gather_dim, scatter_dim), None, None, None


class _GatherSplitBackward(torch.autograd.Function):
    """All-gather along ``dim``; backward keeps this rank's slice of the (identical on every
    rank) gradient, times ``grad_scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup, dim: int, grad_scale: float) -> Tensor:
        ctx.group, ctx.dim, ctx.grad_scale = group, dim, grad_scale
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        world, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        local = grad.chunk(world, dim=ctx.dim)[rank] * ctx.grad_scale
        return local.contiguous(), None, None, None


class _GatherSumBackward(torch.autograd.Function):
    """All-gather along ``dim``; backward sums every rank's gradient and keeps this rank's
    slice (the adjoint of gathering into replicas whose gradients differ)."""

    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup, dim: int) -> Tensor:
        ctx.group, ctx.dim = group, dim
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        # all_reduce then slice rather than reduce_scatter: text tensors are small, and this
        # runs on every backend.
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        world, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return grad.chunk(world, dim=ctx.dim)[rank].contiguous(), None, None


def split_sequence(x: Tensor, group: ProcessGroup, dim: int = 1) -> Tensor:
    """This rank's slice of ``x`` along ``dim``, zero-padding ``x`` to a multiple of the group
    size first. Every rank holds all of ``x``, so the backward is a plain slice (no
    communication): each rank's gradient covers only its own tokens."""
    sp, rank = dist.get_world_size(group), dist.get_rank(group)
    pad = padded_length(x.shape[dim], sp) - x.shape[dim]
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:dim], pad, *x.shape[dim + 1 :])], dim=dim)
    return x.chunk(sp, dim=dim)[rank]


def gather_sequence(
    x: Tensor, group: ProcessGroup, length: int, dim: int = 1, grad_scale: float = 1.0
) -> Tensor:
    """Invert :func:`split_sequence`: gather the slices along ``dim`` and crop the padding to
    ``length``. The result (and so the loss) is the same on every rank; the backward keeps
    this rank's slice of the gradient, times ``grad_scale``."""
    full = _GatherSplitBackward.apply(x, group, dim, float(grad_scale))
    return full.narrow(dim, 0, length)


def sequence_to_heads(x: Tensor, group: ProcessGroup) -> Tensor:
    """``[B, H, N/sp, D]`` (local tokens, all heads) -> ``[B, H/sp, N, D]``."""
    return _AllToAll.apply(x, group, 1, 2)


def heads_to_sequence(x: Tensor, group: ProcessGroup) -> Tensor:
    """``[B, H/sp, N, D]`` (all tokens, local heads) -> ``[B, H, N/sp, D]``."""
    return _AllToAll.apply(x, group, 2, 1)


def gather_heads(x: Tensor, group: ProcessGroup) -> Tensor:
    """``[B, H/sp, N, D]`` -> ``[B, H, N, D]`` on every rank (for the replicated text)."""
    return _GatherSumBackward.apply(x, group, 1)


def ulysses_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    txt_len: int,
    seq_len: int,
    group: ProcessGroup,
    attn_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> Tensor:
    """Joint attention over ``cat(txt, img)`` with the image tokens split across ``group``.

    Args:
        q, k, v: ``[B, H, txt_len + N_local, D]``: all text tokens, then this rank's image
            tokens (a slice of the image sequence padded to a multiple of ``sp``).
        txt_len: text tokens at the front.
        seq_len: real (unpadded) length of the full ``cat(txt, img)`` sequence.
        group: the sequence-parallel group; ``H`` must be divisible by its size.
        attn_fn: attention over full ``[B, h, seq_len, D]`` q, k, v -> ``[B, seq_len, h·D]``.

    Returns:
        ``[B, txt_len + N_local, H·D]``, laid out like the input.
    """
    sp, rank = dist.get_world_size(group), dist.get_rank(group)
    heads = q.shape[1]
    if heads % sp:
        raise ValueError(f"{heads} attention heads do not split over {sp} sequence ranks")
    local = heads // sp
    head_slice = slice(rank * local, (rank + 1) * local)

    def full_sequence(t: Tensor) -> Tensor:  # local heads: all text, then all image tokens
        img = sequence_to_heads(t[:, :, txt_len:], group)
        # The padding is cropped off: padded tokens must not be attended to.
        return torch.cat([t[:, head_slice, :txt_len], img], dim=2)[:, :, :seq_len]

    out = attn_fn(*map(full_sequence, (q, k, v)))
    out = out.unflatten(-1, (local, -1)).transpose(1, 2)  # [B, h, seq_len, D]
    img_len = seq_len - txt_len
    img = F.pad(out[:, :, txt_len:], (0, 0, 0, padded_length(img_len, sp) - img_len))
    img = heads_to_sequence(img, group)
    txt = gather_heads(out[:, :, :txt_len].contiguous(), group)
    return torch.cat([txt, img], dim=2).transpose(1, 2).flatten(2)
