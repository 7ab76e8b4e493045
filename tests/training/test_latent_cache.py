"""The latent cache: keys, exact round trips, exact posterior samples, safe writes."""

from __future__ import annotations

import dataclasses
import logging
import os

import pandas as pd
import pytest
import torch

from opensora_kedro.data.clip_dataset import ClipDataset
from opensora_kedro.data.sampler import SampleKey
from opensora_kedro.models.vae.registry import build_vae
from opensora_kedro.training import latent_cache
from opensora_kedro.training.latent_cache import (
    CachedClipDataset,
    LatentCache,
    LatentKey,
    Moments,
    collate_cached,
    encode_moments,
    merge_moments,
    sample_latent,
    store_misses,
)
from tests.conftest import gradient_frames, write_video

KEY = LatentKey("/clips/a.mp4", 1000, 5, (0, 2, 4, 6, 8), 16, 16, "resize_crop", "vae" * 8)
CHANGES = {
    "path": "/clips/b.mp4",
    "size": 1001,
    "mtime_ns": 6,
    "frames": (1, 2, 4, 6, 8),
    "height": 32,
    "width": 8,
    "transform": "center",
    "vae_id": "other" * 8,
}


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae("tiny_vae").eval().requires_grad_(False)


def moments(seed: int = 0, std: bool = True) -> Moments:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(4, 2, 2, 2, generator=g)
    return Moments(mean, torch.rand(4, 2, 2, 2, generator=g) if std else None)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_key_changes_with_every_part(field):
    assert dataclasses.replace(KEY, **{field: CHANGES[field]}).digest() != KEY.digest()
    assert dataclasses.replace(KEY).digest() == KEY.digest()


@pytest.mark.parametrize("std", [True, False])
def test_hit_returns_exactly_the_stored_tensors(tmp_path, std):
    cache, stored = LatentCache(tmp_path), moments(std=std)
    assert cache.get(KEY) is None
    assert cache.put(KEY, stored)
    hit = cache.get(KEY)
    assert torch.equal(hit.mean, stored.mean)
    assert (hit.std is None) if not std else torch.equal(hit.std, stored.std)


def test_a_finished_entry_is_never_rewritten_and_no_temp_file_stays(tmp_path):
    cache = LatentCache(tmp_path)
    assert cache.put(KEY, moments(0))
    before = os.stat(cache.file(KEY))
    assert not cache.put(KEY, moments(1))  # another rank's copy of the same entry
    assert os.stat(cache.file(KEY)).st_ino == before.st_ino
    assert torch.equal(cache.get(KEY).mean, moments(0).mean)
    assert [p.name for p in cache.file(KEY).parent.iterdir()] == [cache.file(KEY).name]


def test_a_failed_write_leaves_no_entry_and_no_temp_file(tmp_path, monkeypatch):
    def partial_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 16)
        raise OSError("disk full")

    monkeypatch.setattr(latent_cache, "save_file", partial_then_fail)
    cache = LatentCache(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        cache.put(KEY, moments())
    assert not cache.file(KEY).exists() and not any(cache.file(KEY).parent.iterdir())


@pytest.mark.parametrize("damage", ["truncate", "flip", "other_key"])
def test_a_damaged_entry_is_reported_set_aside_and_rewritten(tmp_path, caplog, damage):
    cache = LatentCache(tmp_path)
    cache.put(KEY, moments(0))
    file = cache.file(KEY)
    content = bytearray(file.read_bytes())
    if damage == "truncate":
        file.write_bytes(bytes(content[: len(content) // 2]))
    elif damage == "flip":
        content[-3] ^= 0xFF  # inside the tensor data: only the checksum sees it
        file.write_bytes(bytes(content))
    else:
        other = dataclasses.replace(KEY, size=1)
        cache.put(other, moments(0))
        os.replace(cache.file(other), file)
    with caplog.at_level(logging.WARNING, logger=latent_cache.__name__):
        assert cache.get(KEY) is None
    assert "damaged" in caplog.text and not file.exists()
    assert len(list((tmp_path / "corrupt").iterdir())) == 1
    assert cache.put(KEY, moments(2)) and torch.equal(cache.get(KEY).mean, moments(2).mean)


def test_cached_sample_equals_encode_with_the_same_generator(tmp_path, vae):
    video = torch.rand(3, 3, 5, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(7))
    encoded = encode_moments(vae, video)
    cache, keys = LatentCache(tmp_path), [dataclasses.replace(KEY, size=i) for i in range(3)]
    # A batch of one hit (row 1) and two misses, rebuilt from disk and fresh encodes.
    batch = {"index": torch.arange(3), "miss": torch.tensor([0, 2]), "latent_key": keys}
    store_misses(cache, {**batch, "miss": torch.arange(3)}, encoded)
    hit = cache.get(keys[1])
    batch.update(hit=torch.tensor([1]), mean=hit.mean[None], std=hit.std[None])
    misses = Moments(encoded.mean[[0, 2]], encoded.std[[0, 2]])
    merged = merge_moments(batch, misses)
    drawn = sample_latent(merged, vae.config, generator=torch.Generator().manual_seed(7))
    assert torch.equal(drawn, expected)
    assert torch.equal(sample_latent(merged, vae.config, sample=False), vae.encode(video))


def test_cached_dataset_returns_pixels_then_the_cached_posterior(tmp_path, vae):
    write_video(tmp_path / "a.mp4", gradient_frames(12, 24, 24))
    table = pd.DataFrame({"path": [str(tmp_path / "a.mp4")], "num_frames": [12], "fps": [24.0]})
    clips = ClipDataset(table, seed=3)
    dataset = CachedClipDataset(clips, LatentCache(tmp_path / "cache"), "vae" * 8)
    keys = [SampleKey(0, 5, 16, 16, 1, epoch) for epoch in (0, 1)]
    first = collate_cached([dataset[keys[0]]])
    assert first["miss"].tolist() == [0] and torch.equal(first["video"][0], clips[keys[0]]["video"])
    store_misses(dataset.cache, first, encode_moments(vae, first["video"]))
    second = collate_cached([dataset[keys[1]]])  # another epoch: the same (epoch-0) window
    assert second["hit"].tolist() == [0] and "video" not in second
    assert torch.equal(second["mean"], encode_moments(vae, first["video"]).mean)


def test_per_epoch_windows_encode_each_new_window_once(tmp_path, vae):
    write_video(tmp_path / "a.mp4", gradient_frames(12, 24, 24))
    table = pd.DataFrame({"path": [str(tmp_path / "a.mp4")], "num_frames": [12], "fps": [24.0]})
    clips = ClipDataset(table, seed=3)
    dataset = CachedClipDataset(clips, LatentCache(tmp_path / "cache"), "vae" * 8, False)
    keys = [SampleKey(0, 5, 16, 16, 1, epoch) for epoch in range(8)]
    windows = [tuple(clips.frame_indices(key)) for key in keys]
    assert len(set(windows)) > 1  # epochs draw other windows of the 12 frames
    seen = set()
    for key, window in zip(keys, windows, strict=True):
        batch = collate_cached([dataset[key]])
        # A window met before is a hit; a new one is a miss carrying exactly its frames.
        assert batch["hit"].tolist() == ([0] if window in seen else [])
        if window not in seen:
            assert torch.equal(batch["video"][0], clips[key]["video"])
            store_misses(dataset.cache, batch, encode_moments(vae, batch["video"]))
            seen.add(window)
