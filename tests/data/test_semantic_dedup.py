"""Near-duplicates by CLIP embedding similarity: clustered search equals the all-pairs answer."""

import numpy as np
import pandas as pd
import pytest

from opensora_kedro.data.params import DedupParams
from opensora_kedro.data.semantic_dedup import (
    embed_videos,
    find_embedding_duplicates,
    similar_pairs,
)
from opensora_kedro.quality.tiny_models import build_tiny_clip
from tests.conftest import gradient_frames, write_video


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_clustered_search_finds_exactly_the_pairs_all_pairs_comparison_finds():
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(1500, 32)))
    copies = _unit(base[:60] + rng.normal(scale=0.03, size=(60, 32)))  # near-duplicates
    embeddings = np.concatenate([base, copies])
    found = similar_pairs(embeddings, 0.95)
    similarity = embeddings @ embeddings.T
    i, j = np.nonzero(np.triu(similarity >= 0.95, k=1))
    assert len(found) >= 60
    assert found.tolist() == np.stack([i, j], axis=1).tolist()


def test_duplicates_name_the_first_clip_of_their_group():
    a = [1.0, 0.0, 0.0]
    table = pd.DataFrame({"path": ["c.mp4", "a.mp4", "b.mp4", "d.mp4"],
                          "clip_embedding": [[0.99, 0.05, 0.0], a, [0.98, 0.1, 0.0],
                                             [0.0, 1.0, 0.0]]})  # fmt: skip
    rejected = find_embedding_duplicates(table, 0.95)
    assert rejected["path"].tolist() == ["b.mp4", "c.mp4"]
    assert rejected["detail"].str.startswith("duplicate of a.mp4 (CLIP embedding cosine").all()
    assert set(rejected["reason"]) == {"duplicate"}


def test_a_rescaled_copy_is_found_through_the_real_clip_loading_path(tmp_path):
    clip = build_tiny_clip(["a clip"], tmp_path / "clip")
    frames = gradient_frames(12, 48, 64)
    paths = [write_video(tmp_path / "a.mp4", frames, fps=12),
             write_video(tmp_path / "a_small.mp4", np.ascontiguousarray(frames[:, ::2, ::2])),
             write_video(tmp_path / "noise.mp4", np.random.default_rng(0).integers(
                 0, 255, (12, 48, 64, 3), dtype=np.uint8))]  # fmt: skip
    (tmp_path / "broken.mp4").write_text("not a video")
    meta = pd.DataFrame({"path": [*map(str, paths), str(tmp_path / "broken.mp4")],
                         "num_frames": 12, "file_size": 1, "file_mtime_ns": 1})  # fmt: skip
    # The scorer's defaults before the dedup group: 3 frames per clip, on the CPU.
    params = DedupParams(method="clip", clip_model=str(clip), frames=3, device="cpu")
    embeddings, rejected = embed_videos(meta, params)
    assert rejected[["reason", "stage"]].values.tolist() == [["embedding_failed", "dedup"]]
    assert len(embeddings) == 3
    norms = np.linalg.norm(np.stack(embeddings["clip_embedding"].map(np.asarray)), axis=1)
    assert norms == pytest.approx(1.0, abs=1e-5)
    # a tiny random CLIP finds every clip alike (0.95+), a rescaled copy far more so (0.9999)
    duplicates = find_embedding_duplicates(embeddings, 0.999)
    assert duplicates["path"].str.endswith("a_small.mp4").tolist() == [True]
