"""Open-Sora 2.0's rectified-flow objective and training-time visual conditioning (brief §7.1,
§6.3).

Convention: ``t = 1`` is noise and ``t = 0`` is data. ``t`` is drawn logit-normal per sample,
shifted towards noise for larger and longer latents (SD3's time shift), and the model learns the
velocity ``(1 − σ_min)·noise − x0`` under a plain MSE.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

SIGMA_MIN = 1e-5
CONDITION_TYPES = ("t2v", "i2v_head", "i2v_tail", "i2v_loop", "v2v_head", "v2v_tail")
# Inference only: condition the first / second half of the clip on the same half of a reference.
HALF_CONDITION_TYPES = ("v2v_head_half", "v2v_tail_half")
INFERENCE_CONDITION_TYPES = CONDITION_TYPES + HALF_CONDITION_TYPES
# (33 − 1) / 4 + 1: the latent frames of the 33 pixel frames a causal-VAE v2v condition keeps.
V2V_LATENT_FRAMES = 9
# SD3-style shift: α = 1 at 256 tokens per frame (256px), α = 3 at 4096 (1024px).
_BASE_TOKENS, _MAX_TOKENS, _BASE_SHIFT, _MAX_SHIFT = 256, 4096, 1.0, 3.0


def time_shift_alpha(latent_hw: tuple[int, int], latent_frames: int, patch_size: int = 2) -> float:
    """The shift α for a latent of ``latent_hw = (H_lat, W_lat)`` and ``latent_frames`` frames.

    ``α = lin(H_lat·W_lat / patch²) · sqrt(T_lat)`` with ``lin`` the line through
    (256, 1) and (4096, 3).
    """
    tokens_per_frame = latent_hw[0] * latent_hw[1] / patch_size**2
    slope = (_MAX_SHIFT - _BASE_SHIFT) / (_MAX_TOKENS - _BASE_TOKENS)
    lin = _BASE_SHIFT + (tokens_per_frame - _BASE_TOKENS) * slope
    return lin * math.sqrt(latent_frames)


def shift_timesteps(t: Tensor, alpha: float) -> Tensor:
    """``α·t / (1 + (α − 1)·t)``: keeps 0 and 1 fixed and moves the rest towards noise."""
    return alpha * t / (1 + (alpha - 1) * t)


def sample_timesteps(
    batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """One logit-normal ``t = sigmoid(n)``, ``n ~ N(0, 1)``, per sample -> ``[batch]``."""
    return torch.sigmoid(torch.randn(batch, generator=generator, device=device))


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    return t.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def noise_input(x0: Tensor, noise: Tensor, t: Tensor, sigma_min: float = SIGMA_MIN) -> Tensor:
    """``x_t = (1 − t)·x0 + (1 − (1 − σ_min)(1 − t))·noise`` with ``t [B]``.

    ``t = 1`` gives exactly ``noise``; ``t = 0`` gives ``x0 + σ_min·noise``.
    """
    t = _per_sample(t, x0)
    return (1 - t) * x0 + (1 - (1 - sigma_min) * (1 - t)) * noise


def velocity_target(x0: Tensor, noise: Tensor, sigma_min: float = SIGMA_MIN) -> Tensor:
    """``d x_t / dt = (1 − σ_min)·noise − x0`` (MovieGen's target)."""
    return (1 - sigma_min) * noise - x0


def flow_loss(model_out: Tensor, target: Tensor) -> Tensor:
    """MSE in float32, averaged over every element of the batch."""
    return F.mse_loss(model_out.float(), target.float())


# --------------------------------------------------------------------------- conditioning


def half_latent_frames(latent_frames: int) -> int:
    """Latent frames of a ``*_half`` condition: ``ceil(T / 2)``, so a causal 4k+1 clip's
    halves share the middle frame (129 frames: 17 of 33 latent frames, i.e. 65 pixel frames)."""
    return (latent_frames + 1) // 2


def condition_frames(
    cond_type: str, latent_frames: int, v2v_frames: int = V2V_LATENT_FRAMES
) -> Tensor:
    """Which latent frames ``cond_type`` conditions on -> bool ``[latent_frames]``.

    Images (one latent frame) get no condition, whatever the type. Besides
    :data:`CONDITION_TYPES` this accepts the inference-only ``v2v_head_half`` /
    ``v2v_tail_half`` (the first / last :func:`half_latent_frames`).

    Raises:
        ValueError: unknown condition type.
    """
    if cond_type not in INFERENCE_CONDITION_TYPES:
        valid = ", ".join(INFERENCE_CONDITION_TYPES)
        raise ValueError(f"unknown condition {cond_type!r}; valid: {valid}")
    mask = torch.zeros(latent_frames, dtype=torch.bool)
    if latent_frames <= 1 or cond_type == "t2v":
        return mask
    if cond_type in ("i2v_head", "i2v_loop"):
        mask[0] = True
    if cond_type in ("i2v_tail", "i2v_loop"):
        mask[-1] = True
    if cond_type == "v2v_head":
        mask[:v2v_frames] = True
    if cond_type == "v2v_tail":
        mask[-v2v_frames:] = True
    if cond_type == "v2v_head_half":
        mask[: half_latent_frames(latent_frames)] = True
    if cond_type == "v2v_tail_half":
        mask[-half_latent_frames(latent_frames) :] = True
    return mask


def condition_masks(
    cond_types: Sequence[str], latent_frames: int, v2v_frames: int = V2V_LATENT_FRAMES
) -> Tensor:
    """Per-sample frame masks -> bool ``[B, latent_frames]``."""
    return torch.stack([condition_frames(c, latent_frames, v2v_frames) for c in cond_types])


def prepare_visual_condition(
    latent: Tensor,
    cond_type: str | Sequence[str],
    cond_latent: Tensor | None = None,
    v2v_frames: int = V2V_LATENT_FRAMES,
) -> tuple[Tensor, Tensor]:
    """The model's ``cond`` input: ``cat([mask, mask·cond_latent])`` along channels.

    Args:
        latent: the clip's latent ``[B, C, T, H, W]``.
        cond_type: one type for the batch, or one per sample.
        cond_latent: the conditioning latent, same shape as ``latent``. Open-Sora encodes the
            conditioning pixel frames separately "to prevent information leakage" and places
            them at the conditioned frames; pass that here. ``None`` uses ``latent`` itself.
        v2v_frames: latent frames a v2v condition keeps (9 for a causal VAE, 8 for DC-AE).

    Returns:
        ``(cond [B, C + 1, T, H, W], mask [B, 1, T, H, W])``; the mask is 1 on conditioned
        frames, constant over H and W.
    """
    b, _, t, h, w = latent.shape
    types = [cond_type] * b if isinstance(cond_type, str) else list(cond_type)
    if len(types) != b:
        raise ValueError(f"{len(types)} condition types for a batch of {b}")
    frames = condition_masks(types, t, v2v_frames).to(device=latent.device, dtype=latent.dtype)
    mask = frames[:, None, :, None, None].expand(b, 1, t, h, w)
    source = latent if cond_latent is None else cond_latent
    return torch.cat([mask, mask * source], dim=1), mask


def sample_condition_types(
    batch: int,
    condition_config: Mapping[str, float] | None,
    generator: torch.Generator | None = None,
    latent_frames: int | None = None,
    v2v_frames: int = V2V_LATENT_FRAMES,
) -> list[str]:
    """Draw one condition type per sample with the (normalised) ``condition_config`` weights.

    ``None`` means text-to-video only. Given ``latent_frames``, images (1 frame) are all
    ``t2v`` and v2v types are dropped for clips of at most ``v2v_frames`` latent frames; unlike
    Open-Sora this does not mutate ``condition_config``, so later, longer clips keep them.

    Raises:
        ValueError: unknown type, negative weight, or no positive weight left.
    """
    if condition_config is None or (latent_frames is not None and latent_frames <= 1):
        return ["t2v"] * batch
    if unknown := sorted(set(condition_config) - set(CONDITION_TYPES)):
        raise ValueError(f"unknown condition type(s) {unknown}; valid: {CONDITION_TYPES}")
    weights = dict(condition_config)
    if latent_frames is not None and latent_frames <= v2v_frames:
        weights = {k: v for k, v in weights.items() if not k.startswith("v2v")}
    if any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"condition weights must be >= 0 with a positive sum, got {weights}")
    names = list(weights)
    probs = torch.tensor([weights[n] for n in names], dtype=torch.float64)
    picks = torch.multinomial(probs / probs.sum(), batch, replacement=True, generator=generator)
    return [names[i] for i in picks.tolist()]
