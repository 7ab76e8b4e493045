"""The embedding cache: keys, hits and misses, incremental runs, encoder changes, damage."""

import logging
import pickle

import pytest
import torch

from opensora_kedro.config.schemas.text import TextEmbeddingParams
from opensora_kedro.hashing import caption_hash
from opensora_kedro.text import embedder as embedder_module
from opensora_kedro.text.cache import (
    EMPTY_HASH,
    CacheUpdate,
    CorruptCacheError,
    EmbeddingCache,
    Slot,
    distinct_captions,
    plan_updates,
)
from opensora_kedro.text.cache_writer import write_update
from opensora_kedro.text.embedder import TextEmbedder, embed_plan
from tests.text import CAPTIONS, build_encoders, one_torch_thread, specs

SLOT = Slot("clip", "e" * 64, 8, (4,), "float32", source="fake")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def _update(slot, texts, value=None):
    hashes = [caption_hash(t) for t in texts]
    rows = torch.stack(
        [torch.full(slot.shape, float(i if value is None else value)) for i in range(len(texts))]
    )
    return CacheUpdate(
        slot=slot, caption_hashes=hashes, keys=[slot.key(t) for t in texts], embeddings=rows
    )


def _shards(root):
    return sorted((root / "shards").glob("*.safetensors"))


def test_round_trip_and_reader_api(tmp_path):
    write_update(tmp_path, _update(SLOT, ["a", "b", ""]))
    write_update(tmp_path, CacheUpdate(select={"clip": SLOT}))
    cache = EmbeddingCache.open(tmp_path)
    assert len(cache) == 3 and cache.slot("clip") == SLOT and cache.slots() == [SLOT]
    got = cache.lookup([caption_hash("b"), caption_hash("a")], "clip")
    assert got.shape == (2, 4) and got[:, 0].tolist() == [1.0, 0.0]
    assert cache.null("clip").tolist() == [2.0] * 4 and cache.get(EMPTY_HASH, SLOT).shape == (4,)
    assert cache.lookup([], "clip").shape == (0, 4)
    assert cache.missing([caption_hash("a"), caption_hash("z")], "clip") == [caption_hash("z")]
    with pytest.raises(KeyError, match="has no clip embedding"):
        cache.lookup([caption_hash("z")], "clip")
    with pytest.raises(KeyError, match="no 't5' embeddings"):
        cache.lookup([caption_hash("a")], "t5")
    clone = pickle.loads(pickle.dumps(cache))  # DataLoader workers
    assert torch.equal(clone.lookup([caption_hash("a")], "clip"), got[1:])


def test_keys_depend_on_encoder_max_length_and_text():
    other_encoder = Slot("clip", "f" * 64, 8, (4,), "float32")
    other_length = Slot("clip", "e" * 64, 16, (4,), "float32")
    keys = {SLOT.key("a"), SLOT.key("b"), other_encoder.key("a"), other_length.key("a")}
    assert len(keys) == 4 and len({SLOT.id, other_encoder.id, other_length.id}) == 3


def test_distinct_captions():
    captions = distinct_captions(
        ["a", "b", "a"], [caption_hash("a"), caption_hash("b"), caption_hash("a")]
    )
    assert captions == {caption_hash("a"): "a", caption_hash("b"): "b", EMPTY_HASH: ""}
    with pytest.raises(ValueError, match="1 caption_hash"):
        distinct_captions(["a", "b"], [caption_hash("a"), caption_hash("a")])


def test_missing_folder_is_an_empty_cache(tmp_path):
    cache = EmbeddingCache.open(tmp_path / "nothing")
    assert len(cache) == 0 and cache.slots() == [] and cache.missing(["x"], SLOT) == ["x"]


def test_later_shard_wins_and_damaged_shard_falls_back(tmp_path, caplog):
    write_update(tmp_path, _update(SLOT, ["a"], value=1.0))
    write_update(tmp_path, _update(SLOT, ["a"], value=2.0))
    assert EmbeddingCache.open(tmp_path).get(caption_hash("a"), SLOT).tolist() == [2.0] * 4
    _flip_byte(_shards(tmp_path)[-1])
    cache = EmbeddingCache.open(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert list(cache.verify()) == [_shards(tmp_path)[-1].stem]
    assert "sha256 differs" in caplog.text
    assert cache.get(caption_hash("a"), SLOT).tolist() == [1.0] * 4  # the older, intact copy


def _flip_byte(path, offset=-3):
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))


def test_damage_found_at_read_time_is_never_served(tmp_path):
    write_update(tmp_path, _update(SLOT, ["a"]))
    cache = EmbeddingCache.open(tmp_path)
    _flip_byte(_shards(tmp_path)[0])  # after open: only the lazy check can see it
    with pytest.raises(CorruptCacheError, match="damaged"):
        cache.lookup([caption_hash("a")], SLOT)
    assert cache.missing([caption_hash("a")], SLOT) == [caption_hash("a")]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda shard: shard.with_suffix(".json").write_text("{trunc"), "unreadable manifest"),
        (lambda shard: shard.write_bytes(shard.read_bytes()[:-10]), "manifest says"),
        (lambda shard: shard.unlink(), "missing"),
    ],
)
def test_damage_found_at_open_even_in_size_mode(tmp_path, caplog, damage, reason):
    write_update(tmp_path, _update(SLOT, ["a"]))
    damage(_shards(tmp_path)[0] if _shards(tmp_path) else None)
    with caplog.at_level(logging.WARNING):
        cache = EmbeddingCache.open(tmp_path, verify="size")
    assert reason in next(iter(cache.damaged.values())) and reason in caplog.text
    assert cache.missing([caption_hash("a")], SLOT) == [caption_hash("a")]


def test_orphan_shard_without_manifest_is_ignored(tmp_path):
    write_update(tmp_path, _update(SLOT, ["a"]))
    _shards(tmp_path)[0].with_suffix(".json").unlink()  # as if the write stopped before it
    cache = EmbeddingCache.open(tmp_path)
    assert len(cache) == 0 and cache.damaged == {}


# -- with the tiny encoders: what a run computes -----------------------------------------


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    return specs(build_encoders(tmp_path_factory.mktemp("encoders")))


@pytest.fixture
def forward_passes(monkeypatch):
    """Texts given to every encoder forward pass, and how many encoders were loaded."""
    calls = {"texts": [], "loads": 0}
    encode, init = TextEmbedder.encode, TextEmbedder.__init__

    def counting_encode(self, texts):
        calls["texts"].append((self.role, list(texts)))
        return encode(self, texts)

    def counting_init(self, *args, **kwargs):
        calls["loads"] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(TextEmbedder, "encode", counting_encode)
    monkeypatch.setattr(TextEmbedder, "__init__", counting_init)
    return calls


# The run settings embed_plan reads (the encoders it runs are the specs each test passes).
RUN = TextEmbeddingParams(
    t5={"from_pretrained": "unused", "max_length": 16},
    clip={"from_pretrained": "unused", "max_length": 16},
    device="cpu", batch_size=8, shard_max_mb=0.01, progress=False,
)  # fmt: skip


def _run(root, encoders, texts):
    """One pipeline run's worth of library calls; returns the plan."""
    plan = plan_updates(
        distinct_captions(texts),
        EmbeddingCache.open(root),
        {r: s.slot for r, s in encoders.items()},
    )
    for update in embed_plan(plan, encoders, RUN):
        write_update(root, update)
    return plan


def _embedded(calls, role):
    return [text for r, texts in calls["texts"] if r == role for text in texts]


def test_first_and_second_run(tmp_path, encoders, forward_passes):
    first = _run(tmp_path, encoders, CAPTIONS)
    assert first.metrics() == {
        "damaged_shards": 0,
        "t5_hits": 0,
        "t5_misses": 5,
        "clip_hits": 0,
        "clip_misses": 5,
    }
    assert sorted(_embedded(forward_passes, "t5")) == sorted(["", *CAPTIONS])
    assert forward_passes["loads"] == 2
    forward_passes["texts"].clear()
    second = _run(tmp_path, encoders, CAPTIONS)
    assert second.metrics() == {
        "damaged_shards": 0,
        "t5_hits": 5,
        "t5_misses": 0,
        "clip_hits": 5,
        "clip_misses": 0,
    }
    assert forward_passes["texts"] == [] and forward_passes["loads"] == 2  # no pass, no load


def test_cached_equals_fresh(tmp_path, encoders):
    _run(tmp_path, encoders, CAPTIONS)
    cache = EmbeddingCache.open(tmp_path)
    hashes = [caption_hash(t) for t in CAPTIONS]
    for role, spec in encoders.items():
        fresh = TextEmbedder.from_spec(spec, "cpu").encode([*CAPTIONS, ""])  # the run's one batch
        assert torch.equal(cache.lookup([*hashes, EMPTY_HASH], role), fresh)
    assert cache.lookup(hashes, "t5").shape == (4, 16, 64) and cache.lookup(
        hashes, "clip"
    ).shape == (4, 64)
    assert cache.null("t5").shape == (16, 64) and cache.null("clip").shape == (64,)


def test_only_new_captions_are_computed(tmp_path, encoders, forward_passes):
    _run(tmp_path, encoders, CAPTIONS[:2])
    forward_passes["texts"].clear()
    plan = _run(tmp_path, encoders, CAPTIONS)
    assert plan.hits == {"t5": 3, "clip": 3}
    assert sorted(_embedded(forward_passes, "t5")) == sorted(CAPTIONS[2:])
    assert sorted(_embedded(forward_passes, "clip")) == sorted(CAPTIONS[2:])


def test_encoder_or_max_length_change_misses_by_key(tmp_path, encoders, forward_passes):
    _run(tmp_path, encoders, CAPTIONS)
    longer = {
        "t5": specs({"t5": encoders["t5"].path}, max_length=24)["t5"],
        "clip": encoders["clip"],
    }
    plan = _run(tmp_path, longer, CAPTIONS)
    assert plan.hits == {"t5": 0, "clip": 5}
    cache = EmbeddingCache.open(tmp_path)
    assert cache.slot("t5").max_length == 24 and len(cache.slots()) == 3  # old slot kept
    assert cache.lookup([EMPTY_HASH], "t5").shape == (1, 24, 64)
    reseeded = specs(build_encoders(tmp_path / "reseeded", seed=1), max_length=16)
    assert _run(tmp_path, reseeded, CAPTIONS).hits == {"t5": 0, "clip": 0}


def test_corrupt_file_is_reported_and_recomputed(tmp_path, encoders, forward_passes, caplog):
    _run(tmp_path, encoders, CAPTIONS)
    clip_shard = next(p for p in _shards(tmp_path) if "-clip-" in p.name)
    _flip_byte(clip_shard, offset=-1)
    forward_passes["texts"].clear()
    with caplog.at_level(logging.WARNING):
        plan = _run(tmp_path, encoders, CAPTIONS)
    assert plan.retire == [clip_shard.stem] and "damaged text-embedding shard" in caplog.text
    assert plan.metrics()["clip_misses"] > 0 and plan.metrics()["t5_misses"] == 0
    assert {r for r, _ in forward_passes["texts"]} == {"clip"}
    assert (tmp_path / "corrupt" / clip_shard.name).exists() and not clip_shard.exists()
    cache = EmbeddingCache.open(tmp_path)
    assert cache.damaged == {} and cache.missing(distinct_captions(CAPTIONS), "clip") == []
    fresh = TextEmbedder.from_spec(encoders["clip"], "cpu").encode([""])
    torch.testing.assert_close(cache.lookup([EMPTY_HASH], "clip"), fresh)


def test_encoders_load_only_for_misses(monkeypatch, tmp_path, encoders):
    _run(tmp_path, encoders, CAPTIONS)
    monkeypatch.setattr(
        embedder_module.TextEmbedder, "from_spec", lambda *a, **k: pytest.fail("loaded")
    )
    _run(tmp_path, encoders, CAPTIONS)
