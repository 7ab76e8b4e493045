"""Evaluation metrics and pictures (library code, no Kedro imports)."""

from opensora_kedro.evaluation.reconstruction import (
    psnr,
    reconstruction_metrics,
    side_by_side,
    ssim,
)

__all__ = ["psnr", "reconstruction_metrics", "side_by_side", "ssim"]
