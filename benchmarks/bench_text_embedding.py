"""Text-embedding throughput with the tiny encoders, and the cost of a fully cached re-run.

Builds the tiny T5 / CLIP (conf/local sizes: hidden 64, 2 layers, max_length 32) on synthetic
demo-style captions, embeds them all into a fresh cache (captions/s per encoder, model load
included), then times the re-run the pipeline does when everything is cached: fingerprint the
encoders, open the cache, verify shards, plan, record the slots (target: 10,000 captions in
under 2 s). Finally the reader training uses: random lookups by caption hash.

.venv/bin/python benchmarks/bench_text_embedding.py
.venv/bin/python benchmarks/bench_text_embedding.py --captions 2000 --batch-size 32 --threads 2
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from opensora_kedro.config.schemas.text import TextEmbeddingParams
from opensora_kedro.data.scan import caption_hash
from opensora_kedro.text.cache import (
    EmbeddingCache,
    distinct_captions,
    plan_updates,
)
from opensora_kedro.text.cache_writer import write_update
from opensora_kedro.text.embedder import embed_missing, embed_plan, prepare_encoder
from opensora_kedro.text.params import EmbeddingEncoderParams, TinyEncoderParams
from opensora_kedro.text.tiny_encoders import build_tiny_encoder

logger = logging.getLogger("bench_text_embedding")
ROLES = ("t5", "clip")


def synthetic_captions(count: int, seed: int) -> list[str]:
    """Distinct captions in the demo's style (colour, size, shape, motion, fps, score)."""
    words = itertools.product(
        ["red", "orange", "yellow", "green", "blue", "purple"],
        ["small", "medium", "large"],
        ["circle", "square", "triangle"],
        ["moving left", "moving right", "moving up", "moving down", "staying still"],
        [12, 20, 24, 25, 30],
        range(21),
    )
    captions = [f"a {c} {s} {shape} {m} {fps} FPS, {score} motion score."
                for c, s, shape, m, fps, score in words]  # fmt: skip
    if count > len(captions):
        raise ValueError(f"at most {len(captions)} distinct captions")
    return random.Random(seed).sample(captions, count)


def rerun(
    table_path: Path, cache_dir: Path, folders: dict, args: argparse.Namespace, verify: str
) -> tuple[float, dict]:
    """What a fully cached pipeline run does after Kedro's start-up; returns seconds, metrics."""
    started = time.perf_counter()
    table = pd.read_parquet(table_path)
    params = TextEmbeddingParams(
        **{r: {"from_pretrained": str(folders[r]), "max_length": args.max_length} for r in ROLES},
        dtype="fp32", device="cpu", batch_size=args.batch_size, progress=False,
    )  # fmt: skip
    specs = {r: prepare_encoder(r, getattr(params, r), params.dtype, params.device)
             for r in ROLES}  # fmt: skip
    cache = EmbeddingCache.open(cache_dir, verify=verify)
    plan = plan_updates(distinct_captions(table["text"], table["caption_hash"]), cache,
                        {r: s.slot for r, s in specs.items()})  # fmt: skip
    for update in embed_plan(plan, specs, params):
        write_update(cache_dir, update)
    return time.perf_counter() - started, plan.metrics()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captions", type=int, default=10_000)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-max-mb", type=float, default=64)
    parser.add_argument("--lookups", type=int, default=2_000, help="random batches of 32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two
    # threads spin against other processes (measured 40x slower); --threads 2 to compare.
    torch.set_num_threads(args.threads)
    logger.info("torch threads: %d", torch.get_num_threads())
    logging.getLogger("opensora_kedro").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="bench_text_embedding."))
    try:
        captions = synthetic_captions(args.captions, args.seed)
        table_path = work / "training_table.parquet"
        pd.DataFrame({"text": captions, "caption_hash": [caption_hash(c) for c in captions]}
                     ).to_parquet(table_path)  # fmt: skip
        started = time.perf_counter()
        folders = {r: build_tiny_encoder(r, captions, work / r, TinyEncoderParams()) for r in ROLES}
        logger.info("built both tiny encoders on %d captions: %.2f s (imports included)",
                    len(captions), time.perf_counter() - started)  # fmt: skip

        cache_dir = work / "cache"
        specs = {r: prepare_encoder(r, EmbeddingEncoderParams(from_pretrained=str(folders[r]),
                                                              max_length=args.max_length),
                                    "fp32", device="cpu")
                 for r in ROLES}  # fmt: skip
        todo = list(distinct_captions(captions).items())
        for role, spec in specs.items():
            started = time.perf_counter()
            for update in embed_missing(todo, spec, device="cpu", batch_size=args.batch_size,
                                        shard_max_mb=args.shard_max_mb):  # fmt: skip
                write_update(cache_dir, update)
            seconds = time.perf_counter() - started
            logger.info("first run, %s: %d captions in %.2f s = %.0f captions/s (load and writes "
                        "included)", role, len(todo), seconds, len(todo) / seconds)  # fmt: skip
        size = sum(p.stat().st_size for p in cache_dir.rglob("*")) / 2**20
        logger.info("cache: %.1f MiB in %d shard files", size,
                    len(list(cache_dir.glob("shards/*.safetensors"))))  # fmt: skip

        for verify in ("full", "size"):
            times = []
            for _ in range(args.repeat):
                seconds, metrics = rerun(table_path, cache_dir, folders, args, verify)
                times.append(seconds)
            assert metrics["t5_misses"] == metrics["clip_misses"] == 0, metrics
            logger.info("fully cached re-run over %d captions (verify=%s): best %.3f s of %s "
                        "(target < 2 s)", len(captions), verify, min(times),
                        [round(t, 3) for t in times])  # fmt: skip

        cache = EmbeddingCache.open(cache_dir)
        hashes = [caption_hash(c) for c in captions]
        rng = random.Random(args.seed)
        cache.lookup(hashes, "t5")  # first touch verifies every shard once
        started = time.perf_counter()
        for _ in range(args.lookups):
            batch = rng.sample(hashes, 32)
            cache.lookup(batch, "t5"), cache.lookup(batch, "clip")
        seconds = time.perf_counter() - started
        logger.info("reader: %d batches of 32 (T5 + CLIP) in %.2f s = %.0f captions/s",
                    args.lookups, seconds, 32 * args.lookups / seconds)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
