"""Tiny encoders: tokenizers trained on captions, random models, saved and reloaded offline."""

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from opensora_kedro.evaluation.text_encoders import demo_caption_split, nearest_class_mean_accuracy
from opensora_kedro.text.embedder import TextEmbedder, files_fingerprint
from opensora_kedro.text.params import TinyEncoderParams
from opensora_kedro.text.tiny_encoders import build_tiny_encoder
from opensora_kedro.video.render import COLOURS, SHAPES
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
        build_tiny_encoder("t5", CAPTIONS, tmp_path / "t5", TinyEncoderParams())
    assert (tmp_path / "t5" / "mine.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["t5"]  # no staging folder left


def test_builds_without_captions(tmp_path):
    folders = build_encoders(tmp_path, captions=[])
    tokenizer = T5Tokenizer.from_pretrained(folders["t5"], local_files_only=True, legacy=True)
    assert tokenizer.unk_token_id not in tokenizer("a caption never seen").input_ids


@pytest.fixture(scope="module")
def demo_encoders(tmp_path_factory):
    train, _ = demo_caption_split()
    return build_encoders(tmp_path_factory.mktemp("demo"), captions=[t for t, _ in train])


@pytest.mark.parametrize("role", ["t5", "clip"])
def test_encoders_tell_held_out_captions_apart(demo_encoders, role):
    """Nearest class mean of the training captions' embeddings recovers the colour and the
    direction of captions describing combinations never trained on."""
    train, held = demo_caption_split()
    embedder = TextEmbedder(role, demo_encoders[role], 32, dtype="fp32", device="cpu")
    train_x, test_x = (embedder.encode([t for t, _ in rows]).flatten(1) for rows in (train, held))
    for part in (0, 2):  # colour, direction
        accuracy = nearest_class_mean_accuracy(
            train_x, [c[part] for _, c in train], test_x, [c[part] for _, c in held]
        )
        assert accuracy >= 0.95, (role, part, accuracy)


def test_clip_pooled_vector_differs_between_prompts(demo_encoders):
    embedder = TextEmbedder("clip", demo_encoders["clip"], 32, dtype="fp32", device="cpu")
    red, blue, down = embedder.encode([f"a {c} circle moving {d} 24 FPS, 0 motion score."
                                       for c, d in (("red", "up"), ("blue", "up"), ("red", "down"))])  # fmt: skip
    cosine = torch.nn.functional.cosine_similarity
    # Random 2-layer weights pool nearly one vector for all (cosine 0.96 / 0.99 measured).
    assert cosine(red, blue, dim=0) < 0.85 and cosine(red, down, dim=0) < 0.9


def test_tokenizers_keep_demo_words_whole(demo_encoders):
    t5 = T5Tokenizer.from_pretrained(demo_encoders["t5"], local_files_only=True, legacy=True)
    clip = CLIPTokenizer.from_pretrained(demo_encoders["clip"], local_files_only=True)
    for word in [*COLOURS, *SHAPES, "left", "right", "up", "down", "moving", "staying", "still"]:
        assert len(t5(f" {word}", add_special_tokens=False).input_ids) == 1, word
        assert len(clip(word, add_special_tokens=False).input_ids) == 1, word
    # A word no caption had still tokenises (into bytes), never to <unk>.
    assert t5.unk_token_id not in t5("a zebra").input_ids
