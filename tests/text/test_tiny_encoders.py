"""Tiny encoders: tokenizers trained on captions, random models, saved and reloaded offline."""

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from opensora_kedro.text.embedder import files_fingerprint
from opensora_kedro.text.tiny_encoders import TinyEncoderConfig, build_tiny_encoder
from tests.text import CAPTIONS, build_encoders, one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    return build_encoders(tmp_path_factory.mktemp("encoders"))


def test_t5_round_trip_through_from_pretrained(encoders):
    tokenizer = T5Tokenizer.from_pretrained(encoders["t5"], local_files_only=True, legacy=True)
    model = T5EncoderModel.from_pretrained(encoders["t5"], local_files_only=True)
    again = T5EncoderModel.from_pretrained(encoders["t5"], local_files_only=True)
    assert (model.config.d_model, model.config.num_layers) == (64, 2)
    assert len(tokenizer) == model.config.vocab_size
    ids = tokenizer(CAPTIONS[0] + " xyz {}~", return_tensors="pt").input_ids
    assert tokenizer.unk_token_id not in ids  # the seed corpus covers printable ASCII
    assert ids[0, -1] == tokenizer.eos_token_id == 1 and tokenizer.pad_token_id == 0
    with torch.no_grad():
        assert torch.equal(
            model(input_ids=ids).last_hidden_state, again(input_ids=ids).last_hidden_state
        )


def test_clip_round_trip_through_from_pretrained(encoders):
    tokenizer = CLIPTokenizer.from_pretrained(encoders["clip"], local_files_only=True)
    model = CLIPTextModel.from_pretrained(encoders["clip"], local_files_only=True)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 2)
    batch = tokenizer(
        ["A Red circle, xyz!", ""], padding="max_length", max_length=12, return_tensors="pt"
    )
    ids = batch.input_ids
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos == model.config.eos_token_id != 2
    assert ids[0, 0] == tokenizer.bos_token_id and ids[1, 1] == eos
    # Byte-level with every byte as a word end: nothing before the first eos is <unk> (= eos).
    first_eos = int((ids[0] == eos).nonzero()[0])
    assert tokenizer.convert_ids_to_tokens(ids[0, first_eos - 1].item()) == "!</w>"
    with torch.no_grad():
        pooled = model(input_ids=ids).pooler_output
        hidden = model(input_ids=ids).last_hidden_state
    assert pooled.shape == (2, 64)
    assert torch.equal(pooled[0], hidden[0, first_eos])  # pooled at the first eos token


def test_build_is_deterministic(tmp_path):
    one = build_encoders(tmp_path / "one")
    two = build_encoders(tmp_path / "two")
    other = build_encoders(tmp_path / "other", seed=1)
    for role in ("t5", "clip"):
        assert files_fingerprint(one[role]) == files_fingerprint(two[role])
        assert files_fingerprint(one[role]) != files_fingerprint(other[role])


def test_never_builds_over_an_existing_folder(tmp_path):
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        build_tiny_encoder("t5", CAPTIONS, tmp_path / "t5", TinyEncoderConfig())
    assert (tmp_path / "t5" / "mine.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["t5"]  # no staging folder left


def test_builds_without_captions(tmp_path):
    folders = build_encoders(tmp_path, captions=[])
    tokenizer = T5Tokenizer.from_pretrained(folders["t5"], local_files_only=True, legacy=True)
    assert tokenizer.unk_token_id not in tokenizer("a caption never seen").input_ids
