"""The ``text_embedding`` pipeline: T5 / CLIP embeddings of every caption, cached."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from opensora_kedro.params import Dtype, Params, PositiveInt
from opensora_kedro.text.params import Device, EmbeddingEncoderParams, TinyEncoderParams


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
