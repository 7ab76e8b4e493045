"""Tests of ``opensora_kedro.text``; helpers shared with the pipeline tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from opensora_kedro.text.embedder import EncoderSpec, prepare_encoder
from opensora_kedro.text.params import EmbeddingEncoderParams, TinyEncoderParams
from opensora_kedro.text.tiny_encoders import build_tiny_encoder

CAPTIONS = [
    "a red circle moving left 24 FPS, 3 motion score.",
    "a blue square staying still 12 FPS, 0 motion score.",
    "a green triangle moving up 30 FPS, 7 motion score.",
    "an orange circle moving down 25 FPS, 5 motion score.",
]
MAX_LENGTH = 16


def build_encoders(folder: Path, captions=CAPTIONS, seed: int = 0) -> dict[str, Path]:
    """Both tiny encoders under ``folder`` (``t5/``, ``clip/``)."""
    config = TinyEncoderParams(seed=seed)
    return {
        role: build_tiny_encoder(role, captions, folder / role, config) for role in ("t5", "clip")
    }


def encoder(path: Path, max_length: int = MAX_LENGTH, **options) -> EmbeddingEncoderParams:
    """The ``text_embedding.<role>`` settings of the encoder in ``path``."""
    return EmbeddingEncoderParams(from_pretrained=str(path), max_length=max_length, **options)


def specs(folders: dict[str, Path], max_length: int = MAX_LENGTH) -> dict[str, EncoderSpec]:
    """Encoder specs (fp32, CPU) of built encoders."""
    return {
        role: prepare_encoder(role, encoder(path, max_length), "fp32", device="cpu")
        for role, path in folders.items()
    }


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run tiny models on one intra-op thread: two spin against each other on a busy 2-core
    machine (measured 40x slower), and a tiny model gains nothing from them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
