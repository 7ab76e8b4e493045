"""The embedding cache as a Kedro dataset: load a reader, append shards, never rewrite."""

import os

import pytest
import torch
from kedro.io import DataCatalog, DatasetError

from opensora_kedro.datasets.embedding_cache import EmbeddingCacheDataset
from opensora_kedro.hashing import caption_hash
from opensora_kedro.text import cache_writer as cache_module
from opensora_kedro.text.cache import CacheUpdate, EmbeddingCache, Slot

SLOT = Slot("t5", "a" * 64, 4, (4, 8), "float32")


def _update(texts):
    return CacheUpdate(
        slot=SLOT,
        caption_hashes=[caption_hash(t) for t in texts],
        keys=[SLOT.key(t) for t in texts],
        embeddings=torch.randn(len(texts), *SLOT.shape),
    )


def _files(root):
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in (root / "shards").iterdir()
    }


def test_from_catalog_config(tmp_path):
    catalog = DataCatalog.from_config(
        {
            "text_embeddings": {
                "type": "opensora_kedro.datasets.embedding_cache.EmbeddingCacheDataset",
                "path": str(tmp_path / "cache"),
                "verify": "size",
            }
        }
    )
    assert not catalog.exists("text_embeddings")
    cache = catalog.load("text_embeddings")
    assert isinstance(cache, EmbeddingCache) and len(cache) == 0 and cache.verify_mode == "size"
    catalog.save("text_embeddings", _update(["a"]))
    assert catalog.exists("text_embeddings") and len(catalog.load("text_embeddings")) == 1


def test_save_appends_and_never_rewrites(tmp_path):
    dataset = EmbeddingCacheDataset(str(tmp_path))
    first = _update(["a", "b"])
    dataset.save(first)
    before = _files(tmp_path)
    dataset.save(_update(["c"]))
    dataset.save(CacheUpdate(select={"t5": SLOT}))
    after = _files(tmp_path)
    assert {name: after[name] for name in before} == before  # untouched, same inode
    assert len(after) == len(before) + 2  # one more shard and its manifest
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    cache = dataset.load()
    assert len(cache) == 3 and torch.equal(
        cache.lookup([caption_hash("b")], "t5")[0], first.embeddings[1]
    )


def test_interrupted_save_leaves_the_cache_as_it_was(tmp_path, monkeypatch):
    dataset = EmbeddingCacheDataset(str(tmp_path))
    dataset.save(_update(["a"]))
    replace = os.replace

    def fail_on_manifest(source, target):
        if str(target).endswith(".json"):
            raise OSError("disk full")
        replace(source, target)

    monkeypatch.setattr(cache_module.os, "replace", fail_on_manifest)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(_update(["b"]))
    monkeypatch.undo()
    cache = dataset.load()
    assert len(cache) == 1 and cache.damaged == {}  # the uncommitted shard is an orphan
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_retire_moves_damaged_shards_aside(tmp_path):
    dataset = EmbeddingCacheDataset(str(tmp_path))
    dataset.save(_update(["a"]))
    name = next((tmp_path / "shards").glob("*.safetensors")).stem
    dataset.save(CacheUpdate(retire=[name]))
    assert sorted(p.name for p in (tmp_path / "corrupt").iterdir()) == [
        f"{name}.json",
        f"{name}.safetensors",
    ]
    assert len(dataset.load()) == 0


def test_rejects_what_is_not_an_update(tmp_path):
    with pytest.raises(DatasetError, match="expected a CacheUpdate"):
        EmbeddingCacheDataset(str(tmp_path)).save({"a": 1})
    with pytest.raises(DatasetError, match="verify"):
        EmbeddingCacheDataset(str(tmp_path), verify="none")
    with pytest.raises(DatasetError, match="do not match"):
        EmbeddingCacheDataset(str(tmp_path)).save(
            CacheUpdate(slot=SLOT, caption_hashes=["h"], keys=["k"], embeddings=torch.zeros(1, 3))
        )
