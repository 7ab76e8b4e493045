"""Videos as displayable frames: the one format the measurements and pictures take."""

from __future__ import annotations

import numpy as np
import torch


def as_uint8_frames(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """``T x H x W x 3`` uint8 RGB frames of a video.

    Accepts uint8 frames ``[T, H, W, 3]`` (returned as they are) or a float clip ``[C, T, H, W]``
    (or ``[1, C, T, H, W]``) in ``[-1, 1]`` with 1 or 3 channels, as the dataset and the
    VAE decoder give them.
    """
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().float().numpy()
    video = np.asarray(video)
    if video.dtype == np.uint8:
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be [T, H, W, 3], got {video.shape}")
        return video
    if video.ndim == 5 and video.shape[0] == 1:
        video = video[0]
    if video.ndim != 4 or video.shape[0] not in (1, 3):
        raise ValueError(f"a float clip must be [C, T, H, W] with C 1 or 3, got {video.shape}")
    frames = np.transpose(video, (1, 2, 3, 0))
    frames = np.broadcast_to(frames, (*frames.shape[:3], 3))
    return np.round((np.clip(frames, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
