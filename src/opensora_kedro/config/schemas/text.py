"""The ``text_embedding`` pipeline: T5 / CLIP embeddings of every caption, cached."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from opensora_kedro.config.schemas.common import Dtype, NonNegativeInt, Params, PositiveInt

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


class TextEmbeddingParams(Params):
    """T5 and CLIP embeddings of every training caption (and of ""), in a content-keyed cache."""

    t5: EmbeddingEncoderParams = Field(description="T5 encoder: last_hidden_state per token")
    clip: EmbeddingEncoderParams = Field(description="CLIP text encoder: pooler_output")
    batch_size: PositiveInt = Field(32, description="captions per forward pass")
    dtype: Dtype = Field("bf16", description="compute and storage dtype (auto: from hardware)")
    device: Device = Field("auto", description="cpu, cuda, cuda:N, mps or auto (GPU if present)")
    shard_max_mb: Annotated[float, Field(gt=0)] = Field(
        1024, description="largest cache shard file in MiB (embeddings per file follow)"
    )
    build_if_missing: bool = Field(
        False, description="build tiny random encoders where from_pretrained does not exist"
    )
    tiny: TinyEncoderParams = Field(
        default_factory=TinyEncoderParams, description="sizes of the tiny encoders"
    )
    progress: bool = Field(True, description="show a progress bar while embedding")

    def all_input_paths(self) -> list[tuple[tuple, str]]:
        # With build_if_missing a missing encoder folder is built, not an error.
        return [] if self.build_if_missing else super().all_input_paths()

    def output_paths(self) -> list[str]:
        if self.build_if_missing:
            return [self.t5.from_pretrained, self.clip.from_pretrained]
        return []

    def inert_fields(self) -> list[tuple[tuple, str]]:
        if self.build_if_missing or self.tiny == TinyEncoderParams():
            return []
        return [(("tiny",), "build_if_missing is false: no tiny encoder is built")]
