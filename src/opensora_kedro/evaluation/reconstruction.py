"""Reconstruction quality of a video autoencoder: PSNR, SSIM and a side-by-side picture.

Videos are ``[B, C, T, H, W]`` (or ``[C, T, H, W]``) in ``[-1, 1]``; the metrics map them to
``[0, 1]`` (data range 1), score every frame on its own and average, as Open-Sora v1.3's
``eval/vae`` scripts do. SSIM is Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, "valid" windows only (no padding), per channel, averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
Reduction = Literal["mean", "none"]


def _to_unit(video: Tensor) -> Tensor:
    """``[-1, 1]`` -> ``[0, 1]`` (clamped), float64 for stable statistics, batch dim added."""
    if video.dim() == 4:
        video = video.unsqueeze(0)
    if video.dim() != 5:
        raise ValueError(f"expected [B, C, T, H, W] or [C, T, H, W], got {tuple(video.shape)}")
    return ((video.detach().to(torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0)


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return _to_unit(x), _to_unit(y)


def _reduce(per_frame: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "none":
        return per_frame
    if reduction == "mean":
        return per_frame.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(x: Tensor, y: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB, per frame, of two videos in ``[-1, 1]``.

    Args:
        x, y: videos of the same shape.
        reduction: ``"mean"`` (a scalar over frames and videos) or ``"none"`` (``[B, T]``).

    Returns:
        ``10 log10(1 / MSE)`` with the MSE over a frame's channels and pixels in ``[0, 1]``
        units; ``inf`` for identical frames.
    """
    a, b = _pair(x, y)
    mse = (a - b).square().mean(dim=(1, 3, 4))  # [B, T]
    return _reduce(-10.0 * torch.log10(mse), reduction)  # log10(0) = -inf -> +inf dB


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """The normalised 1-D Gaussian (float64); SSIM's 2-D window is its outer product."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-(coords**2) / (2 * sigma**2))
    return weights / weights.sum()


def _blur(images: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian filter of ``[N, 1, H, W]``, valid region only."""
    images = F.conv2d(images, window.view(1, 1, 1, -1))
    return F.conv2d(images, window.view(1, 1, -1, 1))


def ssim(x: Tensor, y: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Structural similarity (Wang et al. 2004), per frame, of two videos in ``[-1, 1]``.

    Args:
        x, y: videos of the same shape; frames at least 11x11.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (``[B, T]``).

    Returns:
        The mean SSIM map over valid 11x11 windows and channels of each frame; 1 for
        identical frames.
    """
    a, b = _pair(x, y)
    batch, channels, frames, height, width = a.shape
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}")
    # Every (video, channel, frame) is one single-channel image for the filter.
    a = a.reshape(-1, 1, height, width)
    b = b.reshape(-1, 1, height, width)
    window = gaussian_window().to(a.device)
    mu_a, mu_b = _blur(a, window), _blur(b, window)
    var_a = _blur(a * a, window) - mu_a.square()
    var_b = _blur(b * b, window) - mu_b.square()
    cov = _blur(a * b, window) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    )
    per_image = ssim_map.mean(dim=(1, 2, 3)).view(batch, channels, frames)
    return _reduce(per_image.mean(dim=1), reduction)


def reconstruction_metrics(x: Tensor, y: Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of a batch, as plain floats for logging."""
    return {"psnr": float(psnr(x, y)), "ssim": float(ssim(x, y))}


def side_by_side(
    original: Tensor,
    reconstruction: Tensor,
    frames: int | Sequence[int] = 4,
    gap: int = 2,
) -> np.ndarray:
    """An image of a few frames, one row each: original | reconstruction.

    Args:
        original, reconstruction: one video ``[C, T, H, W]`` (or ``[1, C, T, H, W]``) in
            ``[-1, 1]``; 1 or 3 channels.
        frames: how many evenly spaced frames, or which frame indices.
        gap: white pixels between the two columns and between rows.

    Returns:
        ``uint8`` array ``[rows * H + (rows - 1) * gap, 2 * W + gap, 3]``.
    """
    a, b = _pair(original, reconstruction)
    if a.shape[0] != 1 or a.shape[1] not in (1, 3):
        raise ValueError(f"expected one video with 1 or 3 channels, got {tuple(a.shape)}")
    a, b = a[0].expand(3, -1, -1, -1), b[0].expand(3, -1, -1, -1)
    total = a.shape[1]
    if isinstance(frames, int):
        indices = np.linspace(0, total - 1, num=min(frames, total)).round().astype(int).tolist()
    else:
        indices = list(frames)
    if not indices or min(indices) < 0 or max(indices) >= total:
        raise ValueError(f"frame indices {indices} outside 0..{total - 1}")
    _, _, height, width = a.shape
    white = torch.ones(3, height, gap, dtype=a.dtype)
    rows = [torch.cat([a[:, t], white, b[:, t]], dim=2) for t in indices]
    spacer = torch.ones(3, gap, 2 * width + gap, dtype=a.dtype)
    grid = torch.cat([part for row in rows for part in (row, spacer)][:-1], dim=1)
    return (grid.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
