"""Can the text encoders tell demo captions apart? Nearest-class-mean probes on embeddings.

The diffusion model can only follow what its text embeddings distinguish: if two prompts that
differ in colour embed alike, no amount of training recovers the colour. These probes measure
that on the demo grammar, on captions of combinations the encoders were not built on.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from opensora_kedro.video.render import COLOURS, DIRECTIONS, SHAPES, ClipSpec, is_held_out

Combination = tuple[str, str, str]  # (colour, shape, direction)


def demo_caption_split(
    held_out_every: int = 3, seed: int = 0
) -> tuple[list[tuple[str, Combination]], list[tuple[str, Combination]]]:
    """``(training, held_out)`` demo captions with their combination: two of each rendered
    combination with random fps / motion-score suffixes, one of each held-out combination."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for combo in itertools.product(COLOURS, SHAPES, DIRECTIONS):
        text = ClipSpec("", *combo, 8, 8, 24, 9).caption
        if is_held_out(*combo, held_out_every):
            held.append((f"{text} 24 FPS, 0 motion score.", combo))
            continue
        for _ in range(2):
            fps, score = rng.choice([12, 24, 25, 30]), rng.choice([0, 0, 1, 2])
            train.append((f"{text} {fps} FPS, {score} motion score.", combo))
    return train, held


def nearest_class_mean_accuracy(
    train_x: torch.Tensor, train_y: Sequence, test_x: torch.Tensor, test_y: Sequence
) -> float:
    """Share of ``test_x`` rows whose nearest class mean (of ``train_x`` by ``train_y``) is
    their own label ``test_y``. Embeddings are ``[N, D]`` (flatten token sequences first)."""
    labels = sorted(set(train_y))
    classes = np.asarray(train_y)
    means = torch.stack([train_x[torch.from_numpy(classes == label)].mean(0) for label in labels])
    predicted = torch.cdist(test_x.float(), means.float()).argmin(1).tolist()
    return float(np.mean([labels[p] == y for p, y in zip(predicted, test_y, strict=True)]))
