"""A tiny LLaVA built offline, for tests and the embedded default.

A real ``LlavaForConditionalGeneration`` (a CLIP vision tower at 32 px, patch 8, and a Llama
language model, hidden 64, two layers each) with a real ``LlavaProcessor`` (a
``CLIPImageProcessor`` and a word-level tokenizer built from the given captions and the prompt,
with ``<image>`` as a special token and a chat template). Saved with ``save_pretrained``, so the
captioner loads it through ``AutoProcessor`` / ``AutoModelForImageTextToText`` exactly as it
would a downloaded VLM. Its weights are random: what it writes is gibberish made of the
vocabulary's words, but the same gibberish every time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from opensora_kedro.captioning.vlm import DEFAULT_PROMPT
from opensora_kedro.files import build_folder

logger = logging.getLogger(__name__)

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, IMAGE]
IMAGE_SIZE, PATCH_SIZE = 32, 8
# LLaVA-1.5's turn format ("USER: <image>... ASSISTANT:"), one <image> per image of the turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
TEMPLATE_WORDS = "USER ASSISTANT SYSTEM : . , a the video image"


def _word_tokenizer(texts: Iterable[str]):
    """A word-level ``tokenizers.Tokenizer`` over the lowercased words of ``texts``.

    The vocabulary is the special tokens then the words sorted, so the same texts always give
    the same ids (a trainer's ties would follow hash order).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.Lowercase()
    pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs
    words = {
        word
        for text in texts
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    }
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + sorted(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()  # joins words with spaces
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tokenizer


def _processor(captions: Iterable[str], prompt: str):
    """A ``LlavaProcessor``: CLIP preprocessing at 32 px and the word-level tokenizer."""
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_word_tokenizer([*captions, prompt, TEMPLATE_WORDS]),
        bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        additional_special_tokens=[IMAGE], padding_side="left", model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: Llama has none
    )  # fmt: skip
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    # One extra token per image (CLIP's class token), dropped again by the "default" strategy.
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE, image_token=IMAGE,
    )  # fmt: skip


def _model(tokenizer, seed: int):
    """A random-initialised ``LlavaForConditionalGeneration`` sized for ``tokenizer``."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS), strict=True))
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD],
        # LLaVA initialises every weight, vision tower included, from this std. At the usual
        # 0.02 the states barely depend on the images and greedy decoding loops on two words
        # whatever the clip; at 0.5 different frames give different words, so a test can see
        # that the frames reach the model.
        initializer_range=0.5,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=ids[IMAGE],
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    # Random weights would pick a special token now and then (EOS at once: an empty caption).
    # A zero output row gives a special token the logit 0 exactly, while the best of the
    # ~50 word logits is positive for any hidden state short of a freak: the model always
    # writes words, up to max_new_tokens, and never ends early.
    with torch.no_grad():
        model.get_output_embeddings().weight[list(ids.values())] = 0.0
    model.generation_config.update(
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD], do_sample=False
    )
    return model


def build_tiny_vlm(
    folder: str | Path, seed: int = 0, captions: Iterable[str] = (), prompt: str = DEFAULT_PROMPT
) -> Path:
    """Build the tiny VLM (model and processor) into ``folder``, which must not exist.

    ``captions`` and ``prompt`` give the tokenizer its words. Built in a temporary sibling
    folder and renamed into place, so an interrupted build never leaves a half-written model
    where the captioner would load it.
    """
    captions = list(captions)
    processor = _processor(captions, prompt)

    def fill(staging: Path) -> None:
        processor.save_pretrained(staging)
        _model(processor.tokenizer, seed).save_pretrained(staging)

    folder = build_folder(folder, fill, "tiny VLM")
    logger.info("built tiny VLM (LLaVA, vocabulary %d) in %s", len(processor.tokenizer), folder)
    return folder
