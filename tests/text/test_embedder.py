"""Embedders: real from_pretrained loading, shapes, dtype/device, encoder identity."""

import pytest
import torch

from opensora_kedro.text.embedder import (
    TextEmbedder,
    embed_missing,
    prepare_encoder,
    resolve_device,
    resolve_dtype,
    rows_per_shard,
)
from tests.text import CAPTIONS, MAX_LENGTH, build_encoders, encoder, one_torch_thread, specs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build_encoders(tmp_path_factory.mktemp("encoders"))


@pytest.fixture(scope="module")
def embedders(folders):
    return {
        role: TextEmbedder(role, path, MAX_LENGTH, local_files_only=True)
        for role, path in folders.items()
    }


def test_shapes(embedders):
    long_text = " ".join(CAPTIONS * 4)  # far over max_length: truncated
    assert embedders["t5"].encode([CAPTIONS[0], "", long_text]).shape == (3, MAX_LENGTH, 64)
    assert embedders["clip"].encode([CAPTIONS[0], "", long_text]).shape == (3, 64)


def test_batches_do_not_change_an_embedding(embedders):
    for embedder in embedders.values():
        alone = embedder.encode([CAPTIONS[1]])[0]
        batched = torch.cat(list(embedder.encode_batches(CAPTIONS, batch_size=3)))
        assert batched.shape[0] == len(CAPTIONS)
        torch.testing.assert_close(batched[1], alone, rtol=1e-5, atol=1e-5)


def test_no_grad_and_eval(embedders):
    out = embedders["t5"].encode(CAPTIONS[:1])
    assert not out.requires_grad and not embedders["t5"].model.training


def test_clip_max_length_beyond_positions_is_refused(folders):
    with pytest.raises(ValueError, match="exceeds the model's 77 positions"):
        TextEmbedder("clip", folders["clip"], 78)


def test_auto_device_and_dtype_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CPU-only expectations")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16


def test_dtype_from_parameters(folders):
    embedder = TextEmbedder("clip", folders["clip"], MAX_LENGTH, dtype="bf16", device="cpu")
    assert embedder.encode(CAPTIONS[:2]).dtype == torch.bfloat16


def test_encoder_identity(folders, tmp_path):
    base = specs(folders)
    assert base["t5"].slot.shape == (MAX_LENGTH, 64) and base["clip"].slot.shape == (64,)
    assert specs(folders) == base  # stable
    assert specs(folders, max_length=8)["t5"].slot.encoder_id == base["t5"].slot.encoder_id
    assert specs(folders, max_length=8)["t5"].slot.id != base["t5"].slot.id
    bf16 = prepare_encoder("t5", encoder(folders["t5"]), "bf16")
    assert bf16.slot.encoder_id != base["t5"].slot.encoder_id and bf16.slot.dtype == "bfloat16"
    reseeded = specs(build_encoders(tmp_path, seed=1))  # same configs, other weights
    assert reseeded["t5"].slot.encoder_id != base["t5"].slot.encoder_id
    assert base["t5"].slot.key("x") != base["clip"].slot.key("x") != reseeded["clip"].slot.key("x")


def test_missing_encoder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere/t5.*local_files_only is true"):
        prepare_encoder("t5", encoder(tmp_path / "nowhere/t5", 16, local_files_only=True), "fp32")


def test_embed_missing_yields_shards(folders):
    spec = specs(folders)["t5"]
    per_shard = rows_per_shard(spec.slot, shard_max_mb=3 * 16 * 64 * 4 / 2**20)  # 3 rows
    assert per_shard == 3
    todo = [(f"h{i}", text) for i, text in enumerate(CAPTIONS * 2)]
    updates = list(
        embed_missing(todo, spec, device="cpu", batch_size=2, shard_max_mb=3 * 16 * 64 * 4 / 2**20)
    )
    assert [len(u.keys) for u in updates] == [3, 3, 2]
    assert [h for u in updates for h in u.caption_hashes] == [h for h, _ in todo]
    assert updates[0].keys[0] == spec.slot.key(CAPTIONS[0])
    fresh = TextEmbedder.from_spec(spec, "cpu").encode(CAPTIONS[:2])
    torch.testing.assert_close(updates[0].embeddings[:2], fresh, rtol=1e-5, atol=1e-5)
    assert list(embed_missing([], spec)) == []
