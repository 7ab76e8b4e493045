"""Samples during training (finetrainers' validation): every ``samples.every`` updates the job
writes a fixed, seeded set of clips (generated, or VAE reconstructions) as mp4s, one GIF and one
contact sheet into ``<run>/samples/step-XXXXXXXX/``, and rank 0 logs the folder to MLflow."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from opensora_kedro.evaluation.report import animated_gif, contact_sheet
from opensora_kedro.files import write_atomic
from opensora_kedro.params import BucketConfigTree
from opensora_kedro.video.codec import encode_image, encode_mp4

logger = logging.getLogger(__name__)


def sample_folder(output_dir: str | Path, step: int) -> Path:
    """Where the samples of update ``step`` go."""
    return Path(output_dir) / "samples" / f"step-{step:08d}"


def fixed_rows(rows: int, count: int, seed: int) -> list[int]:
    """``count`` row positions out of ``rows``, the same for a seed on every run."""
    return sorted(np.random.default_rng(seed).permutation(rows)[: min(count, rows)].tolist())


def sample_shape(bucket_config: BucketConfigTree, num_frames: int | None) -> tuple[str, int]:
    """The first resolution of ``bucket_config`` and ``num_frames`` or its longest frames."""
    resolution, frames = next(iter(bucket_config.items()))
    return resolution, num_frames or max(frames)


def write_sample_set(
    videos: Sequence[np.ndarray], labels: Sequence[str], folder: Path, fps: float
) -> list[Path]:
    """``sample-<i>.mp4`` per clip (uint8 ``[T, H, W, 3]``), ``samples.gif``, ``samples.png``
    (a contact sheet with the labels) and ``labels.txt``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, frames in enumerate(videos):
        path = folder / f"sample-{number}.mp4"
        write_atomic(path, encode_mp4(_even(frames), fps))
        written.append(path)
    gif, sheet, text = folder / "samples.gif", folder / "samples.png", folder / "labels.txt"
    write_atomic(gif, animated_gif(videos, labels, fps=fps))
    write_atomic(sheet, encode_image(contact_sheet(videos, labels), ".png"))
    write_atomic(text, "".join(f"sample-{i}: {label}\n" for i, label in enumerate(labels)).encode())
    logger.info("samples of this step: %s", folder)
    return [*written, gif, sheet, text]


def _even(frames: np.ndarray) -> np.ndarray:
    """H.264 needs even sides: crop a last odd row or column."""
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    return frames[:, :height, :width]
