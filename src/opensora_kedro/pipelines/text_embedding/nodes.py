"""Nodes of the ``text_embedding`` pipeline: thin adapters over ``opensora_kedro.text``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from opensora_kedro.config.schemas.text import TextEmbeddingParams
from opensora_kedro.text.cache import (
    CacheUpdate,
    EmbeddingCache,
    EmbeddingPlan,
    distinct_captions,
    plan_updates,
)
from opensora_kedro.text.embedder import EncoderSpec, embed_plan, prepare_encoder
from opensora_kedro.text.tiny_encoders import TinyEncoderConfig, build_tiny_encoder

ROLES = ("t5", "clip")


def _captions(table: pd.DataFrame) -> dict[str, str]:
    hashes = table["caption_hash"] if "caption_hash" in table else None
    return distinct_captions(table["text"], hashes)


def prepare_text_encoders(table: pd.DataFrame, params: dict) -> dict[str, EncoderSpec]:
    """Locate both encoders and fingerprint them; build the tiny ones first where allowed.

    A configured folder that exists is used as is (rebuilt only when missing). A missing one
    is built from the table's captions with ``build_if_missing`` (conf/local) and is an error
    otherwise (conf/cluster), naming the parameter and the path.
    """
    config = TextEmbeddingParams.model_validate(params)
    specs = {}
    for role in ROLES:
        encoder = getattr(config, role)
        path = Path(encoder.from_pretrained)
        if not path.exists() and config.build_if_missing:
            tiny = TinyEncoderConfig(
                **config.tiny.model_dump(), max_positions=max(77, config.clip.max_length)
            )
            build_tiny_encoder(role, _captions(table).values(), path, tiny)
        try:
            specs[role] = prepare_encoder(
                role, encoder.from_pretrained, encoder.max_length, config.dtype,
                encoder.local_files_only, encoder.cache_dir, config.device,
            )  # fmt: skip
        except FileNotFoundError as error:
            hint = "" if config.build_if_missing else (
                "; or set text_embedding.build_if_missing: true for a tiny random encoder"
            )  # fmt: skip
            message = f"text_embedding.{role}.from_pretrained: {error}{hint}"
            raise FileNotFoundError(message) from error
    return specs


def plan_text_embeddings(
    table: pd.DataFrame, cache: EmbeddingCache, encoders: dict[str, EncoderSpec]
) -> tuple[EmbeddingPlan, dict]:
    """Which distinct captions (plus "") each encoder still lacks in the cache; the counts."""
    plan = plan_updates(_captions(table), cache, {r: s.slot for r, s in encoders.items()})
    metrics = {"captions": len(table), **plan.metrics()}
    return plan, {name: {"value": float(v), "step": 0} for name, v in metrics.items()}


def embed_captions(
    plan: EmbeddingPlan, encoders: dict[str, EncoderSpec], params: dict
) -> Iterator[CacheUpdate]:
    """Embed what the plan lists, yielding one cache update per shard (a generator node:
    Kedro saves each update as it comes, so only one shard is ever held in memory)."""
    config = TextEmbeddingParams.model_validate(params)
    yield from embed_plan(
        plan, encoders, device=config.device, batch_size=config.batch_size,
        shard_max_mb=config.shard_max_mb, progress=config.progress,
    )  # fmt: skip
