"""The text encoders' parameters: loaded with from_pretrained, or built tiny offline."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from opensora_kedro.params import (
    NonNegativeInt,
    Params,
    PositiveInt,
)


class TextEncoderParams(Params):
    """A Hugging Face text encoder (T5 or CLIP) loaded with ``from_pretrained``."""

    from_pretrained: str = Field(description="model name or local folder for from_pretrained")
    max_length: PositiveInt = Field(description="tokens per caption (padding and truncation)")
    shardformer: bool = Field(False, description="shard the encoder with ColossalAI shardformer")
    cache_dir: str | None = Field(None, description="Hugging Face cache folder for downloads")
    local_files_only: bool = Field(True, description="never download; load only local files")

    def input_paths(self) -> list[tuple[tuple, str]]:
        return [(("from_pretrained",), self.from_pretrained)] if self.local_files_only else []


Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")]


class EmbeddingEncoderParams(Params):
    """One text encoder, loaded with transformers' ``from_pretrained``."""

    from_pretrained: str = Field(
        description="local folder (or Hugging Face name) of the encoder and its tokenizer"
    )
    max_length: PositiveInt = Field(description="tokens per caption (padding and truncation)")
    local_files_only: bool = Field(True, description="never download; load only local files")
    cache_dir: str | None = Field(None, description="Hugging Face cache folder for downloads")

    def input_paths(self) -> list[tuple[tuple, str]]:
        return [(("from_pretrained",), self.from_pretrained)] if self.local_files_only else []


class TinyEncoderParams(Params):
    """Sizes of the tiny encoders built when ``build_if_missing`` is on (the embedded default)."""

    hidden_size: PositiveInt = Field(64, description="T5 d_model and CLIP hidden size")
    num_layers: PositiveInt = Field(2, description="transformer layers of each encoder")
    num_heads: PositiveInt = Field(2, description="attention heads of each encoder")
    vocab_size: PositiveInt = Field(
        1000, description="most tokenizer entries (few captions give fewer)"
    )
    seed: int = Field(0, description="seed of the random initial weights")
    pooled_fit_steps: NonNegativeInt = Field(
        100, description="steps fitting CLIP's pooled vector to the caption words (0: random)"
    )

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        if self.hidden_size % self.num_heads:
            return [(("num_heads",), self.num_heads, f"must divide hidden_size {self.hidden_size}")]
        return []
