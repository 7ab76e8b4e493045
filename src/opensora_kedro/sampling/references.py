"""Reference images and videos for i2v / v2v sampling (brief §8.3): read, pick the pixel frames
a condition type needs, resize-crop, VAE-encode and place them at the conditioned latent frames.

A reference is a file path (image or video, read with PyAV; several paths joined by ``";"``
as in Open-Sora's ``ref`` column) or an array of uint8 frames ``[T, H, W, 3]`` (e.g. the t2i2v
image). What each type takes, for an output of ``num_frames`` frames / ``T`` latent frames:

=================  ====================================================================
``i2v_head``       first frame of the first reference -> latent frame 0
``i2v_tail``       last frame of the last reference -> latent frame ``T - 1``
``i2v_loop``       both of the above
``v2v_head``       first 33 frames (causal VAE; 32 otherwise) -> first 9 (8) latent frames
``v2v_tail``       last 33 (32) frames -> last 9 (8) latent frames
``v2v_head_half``  first half of the reference clip (its first ``num_frames`` frames)
                   -> first ``ceil(T / 2)`` latent frames
``v2v_tail_half``  second half of that clip -> last ``ceil(T / 2)`` latent frames
=================  ====================================================================

The conditioning frames are encoded on their own, apart from anything else, as Open-Sora does
("to prevent information leakage"); the posterior mean is used, so a reference always gives
the same latent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from opensora_kedro.data.clip_dataset import to_clip_tensor
from opensora_kedro.diffusion.rectified_flow import (
    INFERENCE_CONDITION_TYPES,
    V2V_LATENT_FRAMES,
    half_latent_frames,
    prepare_visual_condition,
)
from opensora_kedro.models.vae.base import VideoAutoencoder
from opensora_kedro.video.probe import ProbeError

logger = logging.getLogger(__name__)

Reference = str | os.PathLike | np.ndarray
REF_SEPARATOR = ";"


class ReferenceReadError(ProbeError):
    """A reference file that exists but cannot be decoded; the message names the path."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        super().__init__(reason, f"cannot read reference {path}: {detail}")
        self.path = str(path)


# --------------------------------------------------------------------------- reading


def read_reference(path: str | os.PathLike) -> np.ndarray:
    """All frames of an image or video file as RGB uint8 ``[T, H, W, 3]`` (T = 1 for images).

    Raises:
        FileNotFoundError: no such file.
        ReferenceReadError: not a decodable image / video, or no frames.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ReferenceReadError(path, "no_video", "no video stream")
            stream = container.streams.video[0]
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.error.FFmpegError, OSError) as error:
        raise ReferenceReadError(path, "unreadable", f"{type(error).__name__}: {error}") from error
    if not frames:
        raise ReferenceReadError(path, "empty", "no frames decoded")
    logger.debug("read reference %s: %d frames", path, len(frames))
    return np.stack(frames)


def load_references(ref: Reference | Sequence[Reference]) -> list[np.ndarray]:
    """The frames of each reference: a path, ``"a.mp4;b.png"``, an array, or a list of them."""
    if isinstance(ref, np.ndarray):
        items: list[Reference] = [ref]
    elif isinstance(ref, str | os.PathLike):
        items = [p.strip() for p in str(ref).split(REF_SEPARATOR) if p.strip()]
    else:
        items = list(ref)
    if not items:
        raise ValueError(f"empty reference {ref!r}")
    return [item if isinstance(item, np.ndarray) else read_reference(item) for item in items]


# --------------------------------------------------------------------------- frame selection


def v2v_latent_frames(causal: bool) -> int:
    """Latent frames of a ``v2v_head`` / ``v2v_tail`` condition: 9 (33 frames) causal, else 8."""
    return V2V_LATENT_FRAMES if causal else V2V_LATENT_FRAMES - 1


def conditioned_span(cond_type: str, latent_frames: int, causal: bool) -> tuple[int, int]:
    """``(head, tail)``: how many latent frames ``cond_type`` conditions at the start / end.

    Raises:
        ValueError: unknown type, or a v2v condition that would cover the whole clip.
    """
    if cond_type not in INFERENCE_CONDITION_TYPES:
        valid = ", ".join(INFERENCE_CONDITION_TYPES)
        raise ValueError(f"unknown condition {cond_type!r}; valid: {valid}")
    v2v, half = v2v_latent_frames(causal), half_latent_frames(latent_frames)
    spans = {"t2v": (0, 0), "i2v_head": (1, 0), "i2v_tail": (0, 1), "i2v_loop": (1, 1),
             "v2v_head": (v2v, 0), "v2v_tail": (0, v2v),
             "v2v_head_half": (half, 0), "v2v_tail_half": (0, half)}  # fmt: skip
    head, tail = spans[cond_type]
    if cond_type in ("v2v_head", "v2v_tail") and latent_frames <= v2v:
        raise ValueError(
            f"{cond_type} conditions {v2v} latent frames, which needs an output of more than "
            f"{v2v} latent frames; got {latent_frames} (use more frames or {cond_type}_half)"
        )
    return head, tail


def _need(frames: np.ndarray, count: int, cond_type: str, what: str) -> None:
    if len(frames) < count:
        raise ValueError(
            f"reference too short for {cond_type}: {what} needs {count} frames, "
            f"the reference has {len(frames)}"
        )


def select_frames(
    refs: Sequence[np.ndarray], cond_type: str, num_frames: int, vae: VideoAutoencoder
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The pixel frames for the conditioned head and tail of a ``num_frames`` output.

    The head comes from the first reference, the tail from the last (Open-Sora's rule for
    several references); ``None`` where nothing is conditioned.

    Raises:
        ValueError: unknown type, or a reference with too few frames.
    """
    latent_frames = vae.latent_shape(num_frames, *(vae.spatial_compression,) * 2)[0]
    head, tail = conditioned_span(cond_type, latent_frames, vae.is_causal)
    first, last = refs[0], refs[-1]
    if cond_type.startswith("i2v"):
        return (first[:1] if head else None), (last[-1:] if tail else None)
    if cond_type.endswith("_half"):
        # The reference clip is the first num_frames frames; the halves are its own halves.
        count = vae.num_frames_from_latent(head or tail)
        if head:
            _need(first, count, cond_type, "the first half")
            return first[:count], None
        _need(last, num_frames, cond_type, f"a {num_frames}-frame clip whose second half")
        return None, last[num_frames - count : num_frames]
    count = vae.num_frames_from_latent(head or tail)
    if head:
        _need(first, count, cond_type, "the head")
        return first[:count], None
    _need(last, count, cond_type, "the tail")
    return None, last[-count:]


# --------------------------------------------------------------------------- encoding


@torch.no_grad()
def encode_frames(vae: VideoAutoencoder, frames: np.ndarray, size: tuple[int, int]) -> Tensor:
    """Resize-crop uint8 ``frames`` to ``size = (H, W)`` and encode them -> ``[1, C, t, h, w]``.

    A non-causal VAE cannot encode a lone frame: it is repeated to one latent frame's worth.
    """
    if not vae.is_causal and len(frames) % vae.temporal_compression:
        repeat = vae.temporal_compression - len(frames) % vae.temporal_compression
        frames = np.concatenate([frames, np.repeat(frames[-1:], repeat, axis=0)])
    param = next(vae.parameters())
    video = to_clip_tensor(frames, size, "resize_crop")[None]
    return vae.encode(video.to(param.device, param.dtype), sample=False)


def build_condition(
    vae: VideoAutoencoder,
    ref: Reference | Sequence[Reference] | None,
    cond_type: str,
    num_frames: int,
    size: tuple[int, int],
) -> Tensor | None:
    """The model's ``cond`` ``[1, C + 1, T, h, w]`` for one sample; ``None`` for ``t2v``.

    Raises:
        ValueError: a condition type that needs a reference but got none, a reference too
            short for it, or an unknown type.
        FileNotFoundError, ReferenceReadError: see :func:`read_reference`.
    """
    if cond_type == "t2v":
        return None
    if ref is None or (isinstance(ref, str) and not ref.strip()):
        raise ValueError(f"cond_type {cond_type!r} needs a reference image or video (ref)")
    head, tail = select_frames(load_references(ref), cond_type, num_frames, vae)
    param = next(vae.parameters())
    t, h, w = vae.latent_shape(num_frames, *size)
    cond_latent = torch.zeros(1, vae.latent_channels, t, h, w, device=param.device)
    if head is not None:
        latent = encode_frames(vae, head, size)
        cond_latent[:, :, : latent.shape[2]] = latent
    if tail is not None:
        latent = encode_frames(vae, tail, size)
        cond_latent[:, :, t - latent.shape[2] :] = latent
    cond, _ = prepare_visual_condition(
        cond_latent, cond_type, cond_latent, v2v_latent_frames(vae.is_causal)
    )
    return cond.to(param.dtype)


def build_conditions(
    vae: VideoAutoencoder,
    refs: Sequence[Reference | Sequence[Reference] | None] | None,
    cond_type: str,
    num_frames: int,
    size: tuple[int, int],
    batch: int,
) -> Tensor | None:
    """:func:`build_condition` for each of ``batch`` samples, concatenated; ``None`` for t2v."""
    if cond_type == "t2v":
        return None
    if refs is None:
        raise ValueError(f"cond_type {cond_type!r} needs a reference image or video (ref)")
    if len(refs) != batch:
        raise ValueError(f"{len(refs)} references for {batch} prompts")
    conds = [build_condition(vae, ref, cond_type, num_frames, size) for ref in refs]
    return torch.cat(conds)  # type: ignore[arg-type]
