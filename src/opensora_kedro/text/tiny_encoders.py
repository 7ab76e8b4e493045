"""Tiny T5 and CLIP text encoders built offline, for the embedded default.

The tokenizers are trained on the captions and keep every caption word whole (a sentencepiece
word model with byte fallback for T5, a byte-level BPE with enough merges for CLIP), so a word
is one token whatever its neighbours. The models are ``T5EncoderModel`` / ``CLIPTextModel`` from
small configs: T5 random-initialised (its per-token states keep each word's identity), CLIP
briefly fitted so that its pooled vector (the end-of-text token's state) tells which words the
caption holds; random weights pool nearly the same vector for every caption. Everything is
written with ``save_pretrained``: the embedder loads them through the same ``from_pretrained``
path as the real checkpoints.
"""

from __future__ import annotations

import io
import logging
import string
from collections import Counter
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from opensora_kedro.files import build_folder
from opensora_kedro.text.params import TinyEncoderParams

logger = logging.getLogger(__name__)

# Every printable ASCII character, alone and inside words, so any English caption tokenises
# without <unk> however few captions the tokenizers were trained on.
SEED_CORPUS = [
    string.ascii_lowercase,
    string.ascii_uppercase,
    " ".join(string.ascii_letters + string.digits + string.punctuation),
    "a video of a scene 24 FPS, 5 motion score.",
]
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's own pre-tokenisation (contractions, letter runs, single digits, punctuation runs).
CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_POSITIONS = 77  # CLIP's position table (the tiny CLIP's, unless longer captions need more)


def _corpus(captions: Iterable[str]) -> list[str]:
    return SEED_CORPUS + sorted({c for c in captions if c.strip()})


def save_tiny_t5(captions: Iterable[str], folder: Path, config: TinyEncoderParams) -> None:
    """Train a sentencepiece tokenizer on ``captions``, build a T5 encoder, save both."""
    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    model_file = io.BytesIO()
    # T5's ids: pad 0, eos 1, unk 2, no bos; num_threads=1 keeps training deterministic.
    # A word model: each caption word is one piece; a word never seen falls back to its bytes.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(captions)), model_writer=model_file,
        vocab_size=config.vocab_size, hard_vocab_limit=False, model_type="word",
        byte_fallback=True, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    (folder / "spiece.model").write_bytes(model_file.getvalue())
    tokenizer = T5Tokenizer(vocab_file=str(folder / "spiece.model"), extra_ids=0, legacy=True)
    tokenizer.save_pretrained(folder)
    model_config = T5Config(
        vocab_size=len(tokenizer), d_model=config.hidden_size,
        d_kv=config.hidden_size // config.num_heads, d_ff=2 * config.hidden_size,
        num_layers=config.num_layers, num_heads=config.num_heads,
        feed_forward_proj="gated-gelu",  # as t5-v1_1
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        T5EncoderModel(model_config).save_pretrained(folder)


def _learn_merges(words: Counter, count: int) -> list[tuple[str, str]]:
    """Up to ``count`` BPE merges, most frequent pair first, ties broken by the pair itself.

    Written out rather than tokenizers' BpeTrainer, whose tie-breaking follows hash order: the
    same captions must give the same tokenizer, hence the same encoder fingerprint.
    """
    merges = []
    for _ in range(count):
        pairs: Counter = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:], strict=False):  # neighbours
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        merged: Counter = Counter()
        for word, freq in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        words = merged
    return merges


def _clip_bpe(captions: Iterable[str], vocab_size: int):
    """A byte-level BPE in CLIP's format: "</w>" word ends, CLIP's vocabulary layout."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])  # fmt: skip
    words: Counter = Counter()
    for text in _corpus(captions):
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            words[(*word[:-1], word[-1] + "</w>")] += 1
    # Each byte, each byte as a word end (so no word falls to <unk>), merges, special tokens.
    chars = list(bytes_to_unicode().values())
    merges = _learn_merges(words, max(0, vocab_size - 2 * len(chars) - 2))
    tokens = chars + [f"{c}</w>" for c in chars] + ["".join(m) for m in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    vocab.update({CLIP_BOS: len(vocab), CLIP_EOS: len(vocab) + 1})
    bpe = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>", unk_token=CLIP_EOS))
    bpe.normalizer, bpe.pre_tokenizer, bpe.decoder = normalizer, pre_tokenizer, decoders.ByteLevel()
    bpe.post_processor = processors.RobertaProcessing(
        sep=(CLIP_EOS, vocab[CLIP_EOS]), cls=(CLIP_BOS, vocab[CLIP_BOS]),
        add_prefix_space=False, trim_offsets=False,
    )  # fmt: skip
    return bpe


def save_tiny_clip(
    captions: Iterable[str],
    folder: Path,
    config: TinyEncoderParams,
    max_positions: int = CLIP_POSITIONS,
) -> None:
    """Train a BPE tokenizer on ``captions``, build a CLIP text encoder with ``max_positions``
    positions, save both."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizerFast

    tokenizer = CLIPTokenizerFast(
        tokenizer_object=_clip_bpe(captions, config.vocab_size), bos_token=CLIP_BOS,
        eos_token=CLIP_EOS, unk_token=CLIP_EOS, pad_token=CLIP_EOS,
        model_max_length=max_positions,
    )  # fmt: skip
    tokenizer.save_pretrained(folder)  # tokenizer.json plus vocab.json / merges.txt
    bos, eos = tokenizer.convert_tokens_to_ids([CLIP_BOS, CLIP_EOS])
    # eos_token_id != 2: pooler_output takes the first eos token (not the legacy argmax).
    model_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        intermediate_size=4 * config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, max_position_embeddings=max_positions,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = CLIPTextModel(model_config)
        fit_pooled_to_words(
            model, tokenizer, _corpus(captions), config.pooled_fit_steps, config.seed
        )
    model.save_pretrained(folder)


def word_targets(ids: torch.Tensor, special: list[int], size: int, seed: int) -> torch.Tensor:
    """A target vector per text: the idf-weighted sum of a fixed random direction per token id.

    Words every text shares (articles, the fps/motion suffix) weigh little, words that tell
    texts apart weigh much, so two texts differing in one such word get clearly different
    targets. Scaled to norm ``sqrt(size)``, what a LayerNorm output has.
    """
    present = torch.zeros(len(ids), int(ids.max()) + 1)
    present.scatter_(1, ids, 1.0)
    present[:, [i for i in special if i < present.shape[1]]] = 0.0
    idf = torch.log(len(ids) / present.sum(0).clamp(min=1.0))
    directions = torch.randn(present.shape[1], size, generator=torch.Generator().manual_seed(seed))
    targets = (present * idf) @ torch.nn.functional.normalize(directions, dim=1)
    return torch.nn.functional.normalize(targets, dim=1) * size**0.5


def fit_pooled_to_words(
    model: torch.nn.Module, tokenizer: Any, texts: list[str], steps: int, seed: int = 0
) -> None:
    """Fit ``model``'s pooled output to :func:`word_targets` of ``texts`` (mean squared error,
    full batch, Adam): the pooled vector then says which words the text holds.

    Nothing about colours or directions is told: the vector only learns to keep the words that
    tell texts apart, as a CLIP trained on images keeps what the images show. One thread, so the
    same captions give the same weights.
    """
    texts = sorted(set(texts))
    if steps <= 0 or not texts:
        return
    # Causal attention: the pooled (first end-of-text) state never sees the padding after it.
    ids = tokenizer(texts, padding="longest", truncation=True, return_tensors="pt").input_ids
    special = [model.config.bos_token_id, model.config.eos_token_id]
    targets = word_targets(ids, special, model.config.hidden_size, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(input_ids=ids).pooler_output, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
        model.eval()
    logger.info("fitted the tiny CLIP's pooled vector to the caption words (mse %.4f)", loss.item())


def build_tiny_encoder(
    role: str,
    captions: Iterable[str],
    folder: str | Path,
    config: TinyEncoderParams,
    max_positions: int = CLIP_POSITIONS,
) -> Path:
    """Build the tiny ``role`` encoder ("t5" / "clip") of ``config``'s sizes into ``folder``,
    which must not exist (``max_positions``: the CLIP encoder's position table).

    Built in a temporary sibling folder and renamed into place, so an interrupted build never
    leaves a half-written encoder where the embedder would load it.
    """
    builders = {"t5": save_tiny_t5, "clip": partial(save_tiny_clip, max_positions=max_positions)}
    folder = build_folder(folder, lambda staging: builders[role](captions, staging, config),
                          "tiny encoder")  # fmt: skip
    logger.info("built tiny %s encoder (hidden %d, %d layers) in %s",
                role, config.hidden_size, config.num_layers, folder)  # fmt: skip
    return folder
