"""How well the tiny text encoders tell demo captions apart (issue 12's first root cause).

Builds the tiny T5 / CLIP on training captions of the demo's rendered combinations (two fps /
motion-score suffixes each; conf/base's ``held_out_every: 3``), embeds the captions of the
held-out combinations, and reports for each encoder: nearest-class-mean accuracy of colour,
direction and shape on the held-out captions (means of the training captions' embeddings per
class), the mean cosine between different captions, and the cosine between prompts that differ
only in colour or only in direction. ``--fit-steps 0`` gives the random (unfitted) CLIP.

.venv/bin/python benchmarks/bench_text_discrimination.py
.venv/bin/python benchmarks/bench_text_discrimination.py --fit-steps 0
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from opensora_kedro.evaluation.text_encoders import demo_caption_split, nearest_class_mean_accuracy
from opensora_kedro.text.embedder import TextEmbedder
from opensora_kedro.text.params import TinyEncoderParams
from opensora_kedro.text.tiny_encoders import build_tiny_encoder

logger = logging.getLogger("bench_text_discrimination")
PARTS = {"colour": 0, "shape": 1, "direction": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-steps", type=int, default=TinyEncoderParams().pooled_fit_steps)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    train, held = demo_caption_split()
    cosine = torch.nn.functional.cosine_similarity
    with tempfile.TemporaryDirectory() as tmp:
        config = TinyEncoderParams(pooled_fit_steps=args.fit_steps)
        for role in ("t5", "clip"):
            start = time.perf_counter()
            build_tiny_encoder(role, [t for t, _ in train], Path(tmp) / role, config)
            built = time.perf_counter() - start
            embedder = TextEmbedder(role, Path(tmp) / role, 32, dtype="fp32", device="cpu")
            train_x = embedder.encode([t for t, _ in train]).flatten(1)
            test_x = embedder.encode([t for t, _ in held]).flatten(1)
            scores = {
                name: nearest_class_mean_accuracy(
                    train_x, [c[i] for _, c in train], test_x, [c[i] for _, c in held]
                )
                for name, i in PARTS.items()
            }
            unit = torch.nn.functional.normalize(test_x, dim=1)
            pairwise = unit @ unit.T
            off_diagonal = (pairwise.sum() - pairwise.trace()) / (len(unit) ** 2 - len(unit))
            base, colour, direction = embedder.encode([
                "a red circle moving up 24 FPS, 0 motion score.",
                "a blue circle moving up 24 FPS, 0 motion score.",
                "a red circle moving down 24 FPS, 0 motion score.",
            ]).flatten(1)  # fmt: skip
            logger.info(
                "%s: built in %.1f s; held-out nearest class mean %s; mean cosine %.2f; "
                "colour-only cosine %.3f, direction-only %.3f", role, built,
                ", ".join(f"{k} {v:.0%}" for k, v in scores.items()), off_diagonal,
                cosine(base, colour, dim=0), cosine(base, direction, dim=0),
            )  # fmt: skip


if __name__ == "__main__":
    main()
