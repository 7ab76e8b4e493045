"""Near-duplicate clips by CLIP embedding similarity (semantic deduplication, SemDeDup-style).

Each clip is embedded once (:class:`~opensora_kedro.quality.clip_scores.ClipEmbedder`: the
normalised mean of its frames' CLIP image embeddings). Two clips are near-duplicates when their
cosine similarity reaches ``min_similarity``. No all-pairs comparison: the embeddings are
clustered with k-means (about sqrt(n) clusters), every clip joins its two nearest clusters (so
pairs near a boundary meet in one), and pairs are compared only within a cluster, one matrix
product per cluster. As in the dHash search, each group keeps its first clip by path.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from opensora_kedro.data.cached_stage import run_cached_stage, settings_fingerprint
from opensora_kedro.data.dedup import first_of_each_group
from opensora_kedro.data.engine import LOCAL_ENGINE, EngineSettings, Journal
from opensora_kedro.data.params import DedupParams
from opensora_kedro.data.scan import REJECT_COLUMNS
from opensora_kedro.quality.clip_scores import SCORE_SETTINGS, ClipEmbedder
from opensora_kedro.quality.params import QualityParams

logger = logging.getLogger(__name__)

KMEANS_ITERATIONS = 10
CHUNK = 4096  # rows per similarity block: bounds memory in big clusters


def embed_videos(
    meta: pd.DataFrame,
    params: DedupParams,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(embeddings, rejected)``: ``clip_embedding`` of every clip of ``meta`` by
    ``params.clip_model`` over ``params.frames`` frames on ``params.device`` (unchanged clips
    keep theirs while the model and sampling are the same)."""
    # The quality scorer's CLIP settings (its batch size; no aesthetic head) with the dedup
    # group's model, frames and device: one loading and sampling path for both stages.
    clip = QualityParams(clip_model=params.clip_model, frames=params.frames, device=params.device)
    table, rejected = run_cached_stage(
        meta, ClipEmbedder(clip), "embedding", ["clip_embedding"],
        settings_fingerprint(clip, SCORE_SETTINGS), previous, engine, journal,
    )  # fmt: skip
    return table, rejected.assign(stage="dedup")


def similar_pairs(embeddings: np.ndarray, min_similarity: float, seed: int = 0) -> np.ndarray:
    """Row pairs ``[m, 2]`` (``i < j``) whose cosine similarity is at least ``min_similarity``
    (rows are unit vectors), compared within k-means clusters."""
    n = len(embeddings)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    members = _two_nearest_clusters(embeddings, max(1, int(np.sqrt(n))), seed)
    found = []
    for cluster in np.unique(members):
        rows = np.flatnonzero((members == cluster).any(axis=1))
        for start in range(0, len(rows), CHUNK):
            block = rows[start : start + CHUNK]
            similarity = embeddings[block] @ embeddings[rows].T
            i, j = np.nonzero(similarity >= min_similarity)
            pairs = np.stack([block[i], rows[j]], axis=1)
            found.append(pairs[pairs[:, 0] < pairs[:, 1]])
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def _two_nearest_clusters(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``[n, 2]``: the two nearest of ``k`` spherical k-means centroids of each row."""
    rng = np.random.default_rng(seed)
    centroids = embeddings[rng.choice(len(embeddings), size=k, replace=False)]
    for _ in range(KMEANS_ITERATIONS):
        nearest = (embeddings @ centroids.T).argmax(axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, embeddings)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centroids)
    scores = embeddings @ centroids.T
    if k == 1:
        return np.zeros((len(embeddings), 2), dtype=np.int64)
    return np.argpartition(-scores, 1, axis=1)[:, :2]


def find_embedding_duplicates(table: pd.DataFrame, min_similarity: float) -> pd.DataFrame:
    """Near-duplicates of ``table`` (``path``, ``clip_embedding``) as rejected rows naming the
    clip each one duplicates."""
    if table.empty:
        return pd.DataFrame(columns=REJECT_COLUMNS)
    table = table.sort_values("path", ignore_index=True)
    embeddings = np.stack(table["clip_embedding"].map(np.asarray)).astype(np.float32)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    pairs = similar_pairs(embeddings, min_similarity)
    keeper = first_of_each_group(pairs)
    rows = [
        {"path": table.at[i, "path"], "stage": "dedup", "reason": "duplicate",
         "detail": f"duplicate of {table.at[first, 'path']} (CLIP embedding cosine "
                   f"{float(embeddings[i] @ embeddings[first]):.3f}, at least {min_similarity})"}
        for i, first in sorted(keeper.items()) if i != first
    ]  # fmt: skip
    logger.info("semantic dedup: %d near-duplicate clip(s) among %d", len(rows), len(table))
    return pd.DataFrame(rows, columns=REJECT_COLUMNS)
