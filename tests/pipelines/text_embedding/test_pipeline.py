"""The text_embedding pipeline, run by Kedro's runner on a hand-built catalog."""

import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from opensora_kedro.config.schemas.text import TextEmbeddingParams
from opensora_kedro.datasets.embedding_cache import EmbeddingCacheDataset
from opensora_kedro.hashing import caption_hash
from opensora_kedro.pipelines.text_embedding import create_pipeline
from opensora_kedro.text.cache import EMPTY_HASH, EmbeddingCache
from opensora_kedro.text.embedder import TextEmbedder
from tests.text import CAPTIONS, one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def _params(root, **changes):
    params = {
        "t5": {"from_pretrained": str(root / "models/t5"), "max_length": 16},
        "clip": {"from_pretrained": str(root / "models/clip"), "max_length": 16},
        "batch_size": 4, "dtype": "fp32", "device": "auto", "shard_max_mb": 0.01,
        "build_if_missing": True, "progress": False,
    }  # fmt: skip
    return {**params, **changes}


def _run(root, captions, params):
    table = pd.DataFrame({"text": captions, "caption_hash": [caption_hash(c) for c in captions]})
    cache = str(root / "cache")
    catalog = DataCatalog(
        {
            "training_table": MemoryDataset(table),
            "params:text_embedding": MemoryDataset(TextEmbeddingParams.model_validate(params)),
            "text_embeddings_previous": EmbeddingCacheDataset(cache),
            "text_embeddings": EmbeddingCacheDataset(cache),
            # On disk: the runner releases data held in memory once consumed.
            "text_embedding_metrics": JSONDataset(filepath=str(root / "metrics.json")),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    metrics = catalog.load("text_embedding_metrics")
    return catalog.load("text_embeddings"), {name: m["value"] for name, m in metrics.items()}


@pytest.fixture
def encodes(monkeypatch):
    """Texts each encoder forward pass received."""
    calls = []
    encode = TextEmbedder.encode
    monkeypatch.setattr(
        TextEmbedder,
        "encode",
        lambda self, texts: calls.append((self.role, list(texts))) or encode(self, texts),
    )
    return calls


def test_first_run_builds_encoders_and_embeds_every_caption(tmp_path, encodes):
    cache, metrics = _run(tmp_path, CAPTIONS + CAPTIONS[:1], _params(tmp_path))
    assert (tmp_path / "models/t5/spiece.model").exists() and (
        tmp_path / "models/clip/tokenizer.json"
    ).exists()
    assert metrics == {
        "captions": 5,
        "damaged_shards": 0,
        "t5_hits": 0,
        "t5_misses": 5,
        "clip_hits": 0,
        "clip_misses": 5,
    }
    hashes = [caption_hash(c) for c in CAPTIONS]
    assert cache.lookup(hashes, "t5").shape == (4, 16, 64)
    assert cache.lookup(hashes, "clip").shape == (4, 64)
    assert cache.null("t5").shape == (16, 64) and cache.get(EMPTY_HASH, "clip").shape == (64,)
    assert len(list((tmp_path / "cache/shards").glob("*.safetensors"))) > 2  # sharded

    # Re-run: encoders kept as they are, nothing embedded; then one new caption.
    model_files = {p: p.stat().st_mtime_ns for p in (tmp_path / "models").rglob("*")}
    encodes.clear()
    _, metrics = _run(tmp_path, CAPTIONS, _params(tmp_path))
    assert encodes == [] and metrics["t5_hits"] == metrics["clip_hits"] == 5
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "models").rglob("*")} == model_files
    cache, metrics = _run(tmp_path, [*CAPTIONS, "a purple square moving right"], _params(tmp_path))
    assert sorted(encodes) == [
        ("clip", ["a purple square moving right"]),
        ("t5", ["a purple square moving right"]),
    ]
    assert metrics["t5_misses"] == 1 and cache.get(
        caption_hash("a purple square moving right"), "t5"
    ).shape == (16, 64)


def test_max_length_change_misses_and_training_sees_the_new_slot(tmp_path, encodes):
    _run(tmp_path, CAPTIONS, _params(tmp_path))
    encodes.clear()
    params = _params(tmp_path, t5={"from_pretrained": str(tmp_path / "models/t5"), "max_length": 8})
    cache, metrics = _run(tmp_path, CAPTIONS, params)
    assert (metrics["t5_misses"], metrics["clip_hits"]) == (5, 5)
    assert {role for role, _ in encodes} == {"t5"}
    assert cache.slot("t5").max_length == 8 and cache.null("t5").shape == (8, 64)


def test_missing_encoder_without_build_names_the_path(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"text_embedding.t5.from_pretrained: no text encoder at '.*models/t5'",
    ):
        _run(tmp_path, CAPTIONS, _params(tmp_path, build_if_missing=False))
    assert not (tmp_path / "models").exists()


def test_cached_embeddings_equal_fresh_ones(tmp_path):
    cache, _ = _run(tmp_path, CAPTIONS, _params(tmp_path, dtype="bf16"))
    assert cache.slot("t5").dtype == "bfloat16"
    fresh = TextEmbedder("t5", tmp_path / "models/t5", 16, dtype="bf16").encode(
        CAPTIONS[:4]
    )  # the run's first batch
    assert torch.equal(cache.lookup([caption_hash(c) for c in CAPTIONS[:4]], "t5"), fresh)
    assert isinstance(EmbeddingCache.open(tmp_path / "cache"), EmbeddingCache)
