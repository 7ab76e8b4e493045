"""A tiny CLIP model and aesthetic head built offline, for the local scores.

Random-initialised from small configs and written with ``save_pretrained`` / safetensors, so the
scorer loads them through the same ``from_pretrained`` path as real checkpoints. A random model
cannot judge quality: conf/local records its scores and filters nothing. The tokenizer is the
text encoders' caption-trained byte-level BPE, so every caption word is a token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from opensora_kedro.files import build_folder, write_atomic
from opensora_kedro.quality.clip_scores import AestheticHead
from opensora_kedro.quality.params import QualityParams
from opensora_kedro.text.tiny_encoders import CLIP_BOS, CLIP_EOS, _clip_bpe

logger = logging.getLogger(__name__)

IMAGE_SIZE = 32  # the processor resizes and crops every frame to this
PATCH_SIZE = 8  # 4 x 4 patches
HIDDEN = 32
LAYERS = 2
HEADS = 2
PROJECTION_DIM = 32
VOCAB_SIZE = 1000  # an upper bound, as the tiny text encoders'
MAX_POSITIONS = 77  # CLIP's position table


def _save_tiny_clip(captions: Iterable[str], folder: Path, seed: int) -> None:
    """CLIP model, image processor and caption-trained tokenizer, saved into ``folder``."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizerFast,
    )

    tokenizer = CLIPTokenizerFast(
        tokenizer_object=_clip_bpe(captions, VOCAB_SIZE), bos_token=CLIP_BOS, eos_token=CLIP_EOS,
        unk_token=CLIP_EOS, pad_token=CLIP_EOS, model_max_length=MAX_POSITIONS,
    )  # fmt: skip
    bos, eos = tokenizer.convert_tokens_to_ids([CLIP_BOS, CLIP_EOS])
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=size)
    shared = {"hidden_size": HIDDEN, "intermediate_size": 4 * HIDDEN,
              "num_hidden_layers": LAYERS, "num_attention_heads": HEADS}  # fmt: skip
    # eos_token_id != 2: the pooled text state is the first end-of-text token's.
    text = {**shared, "vocab_size": len(tokenizer), "max_position_embeddings": MAX_POSITIONS,
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}  # fmt: skip
    vision = {**shared, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION_DIM)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def build_tiny_clip(captions: Iterable[str], folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny CLIP (model, processor, tokenizer) into ``folder``, which must not exist.

    Built in a temporary sibling folder and renamed into place, so an interrupted build never
    leaves a half-written model where the scorer would load it. Same captions and seed, same
    files.
    """
    folder = build_folder(folder, lambda staging: _save_tiny_clip(captions, staging, seed),
                          "tiny CLIP")  # fmt: skip
    logger.info("built tiny CLIP (image %d, hidden %d, projection %d) in %s",
                IMAGE_SIZE, HIDDEN, PROJECTION_DIM, folder)  # fmt: skip
    return folder


def build_tiny_aesthetic_head(embed_dim: int, path: str | Path, seed: int = 0) -> Path:
    """Write a random-initialised :class:`AestheticHead` for ``embed_dim``-dim embeddings to
    the safetensors file ``path`` (atomically; replaces an existing file)."""
    from safetensors.torch import save

    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = {k: v.contiguous() for k, v in AestheticHead(embed_dim).state_dict().items()}
    write_atomic(path, save(state, metadata={"format": "pt"}))
    logger.info("built tiny aesthetic head (input %d) in %s", embed_dim, path)
    return path


def build_missing_tiny_models(params: QualityParams, captions: Iterable[str]) -> None:
    """The embedded default's random CLIP (tokenizer from ``captions``) and aesthetic head,
    each built only where missing at ``params``' paths: scores are recorded, not judged."""
    if not Path(params.clip_model).exists():
        build_tiny_clip(captions, params.clip_model)
    if params.aesthetic_head and not Path(params.aesthetic_head).exists():
        from transformers import CLIPConfig

        config = CLIPConfig.from_pretrained(params.clip_model, local_files_only=True)
        build_tiny_aesthetic_head(config.projection_dim, params.aesthetic_head)
