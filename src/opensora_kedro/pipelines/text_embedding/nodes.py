"""Nodes of the ``text_embedding`` pipeline: thin adapters over ``opensora_kedro.text``."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from opensora_kedro.config.schemas.text import TextEmbeddingParams
from opensora_kedro.text.cache import (
    CacheUpdate,
    EmbeddingCache,
    EmbeddingPlan,
    distinct_captions,
    plan_updates,
)
from opensora_kedro.text.embedder import EncoderSpec, embed_plan, prepare_encoders


def _captions(table: pd.DataFrame) -> dict[str, str]:
    hashes = table["caption_hash"] if "caption_hash" in table else None
    return distinct_captions(table["text"], hashes)


def prepare_text_encoders(
    table: pd.DataFrame, params: TextEmbeddingParams
) -> dict[str, EncoderSpec]:
    """Locate both encoders and fingerprint them; a missing one is built from the table's
    captions with ``build_if_missing`` (conf/local) and an error naming the path otherwise."""
    # The captions only train the tiny encoders' tokenizers.
    captions = list(_captions(table).values()) if params.build_if_missing else []
    return prepare_encoders(params, captions)


def plan_text_embeddings(
    table: pd.DataFrame, cache: EmbeddingCache, encoders: dict[str, EncoderSpec]
) -> tuple[EmbeddingPlan, dict]:
    """Which distinct captions (plus "") each encoder still lacks in the cache; the counts."""
    plan = plan_updates(_captions(table), cache, {r: s.slot for r, s in encoders.items()})
    metrics = {"captions": len(table), **plan.metrics()}
    return plan, {name: {"value": float(v), "step": 0} for name, v in metrics.items()}


def embed_captions(
    plan: EmbeddingPlan, encoders: dict[str, EncoderSpec], params: TextEmbeddingParams
) -> Iterator[CacheUpdate]:
    """Embed what the plan lists, yielding one cache update per shard (a generator node:
    Kedro saves each update as it comes, so only one shard is ever held in memory)."""
    yield from embed_plan(plan, encoders, params)
