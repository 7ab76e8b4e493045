"""Near-duplicate search over many clips' frame hashes (issue 17 target: 1M rows < 10 s on one
core), and the per-clip cost of hashing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dedup.py --rows 1000000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dedup.py --embeddings 100000

Random 64-bit hashes for 4 frames per clip, with 1,000 planted near-duplicates (up to 3 bits
flipped per frame); the search runs through the band index (`data.dedup.find_duplicates`),
which must find every planted pair. Best of 3 rounds. With ``--embeddings N``: the CLIP
embedding search (`data.semantic_dedup.similar_pairs`) over N random 512-d unit vectors with
1,000 planted near-copies (cosine about 0.99), once.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd

from opensora_kedro.data.dedup import find_duplicates, hash_columns
from opensora_kedro.data.semantic_dedup import similar_pairs

FRAMES, PLANTED, MAX_DISTANCE = 4, 1000, 3


def synthetic_hashes(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` random clips, the last ``PLANTED`` near-copies of the first ``PLANTED``."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-(2**63), 2**63 - 1, size=(rows, FRAMES), dtype=np.int64).view(np.uint64)
    flips = np.zeros((PLANTED, FRAMES), dtype=np.uint64)
    for _ in range(MAX_DISTANCE):  # up to 3 random bits per frame (repeats flip back: fewer)
        flips ^= np.uint64(1) << rng.integers(0, 64, size=(PLANTED, FRAMES)).astype(np.uint64)
    codes[rows - PLANTED :] = codes[:PLANTED] ^ flips
    table = pd.DataFrame(codes.view(np.int64), columns=hash_columns(FRAMES))
    table.insert(0, "path", [f"clip_{i:08d}.mp4" for i in range(rows)])
    return table


def embedding_search(rows: int, dim: int = 512, seed: int = 0) -> None:
    """Time the clustered cosine search and check it finds every planted copy."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(rows, dim)).astype(np.float32)
    embeddings[rows - PLANTED :] = embeddings[:PLANTED] + rng.normal(
        scale=0.1, size=(PLANTED, dim)).astype(np.float32)  # fmt: skip
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    started = time.perf_counter()
    pairs = similar_pairs(embeddings, 0.95)
    seconds = time.perf_counter() - started
    found = {tuple(p) for p in pairs.tolist()}
    missed = sum((i, rows - PLANTED + i) not in found for i in range(PLANTED))
    logging.getLogger("bench_dedup").info(
        "%d clips x %d-d CLIP embeddings: %.2f s, %d pairs found, %d of %d planted missed",
        rows, dim, seconds, len(found), missed, PLANTED,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--embeddings", type=int, help="time the CLIP embedding search instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("opensora_kedro").setLevel(logging.WARNING)
    if args.embeddings:
        embedding_search(args.embeddings)
        return
    table = synthetic_hashes(args.rows)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        duplicates = find_duplicates(table, MAX_DISTANCE)
        best = min(best, time.perf_counter() - started)
    found = set(duplicates["path"])
    planted = {f"clip_{i:08d}.mp4" for i in range(args.rows - PLANTED, args.rows)}
    logging.getLogger("bench_dedup").info(
        "%d clips x %d frame hashes: %.2f s, %d duplicates found, %d of %d planted missed",
        args.rows, FRAMES, best, len(found), len(planted - found), PLANTED,
    )  # fmt: skip


if __name__ == "__main__":
    main()
