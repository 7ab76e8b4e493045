"""T5 and CLIP text embedders over transformers, and what identifies an encoder for the cache.

As Open-Sora's ``HFEmbedder``: T5 gives ``last_hidden_state`` ``[B, max_length, d_model]``,
CLIP gives ``pooler_output`` ``[B, hidden]``; both tokenise with ``padding="max_length"`` and
``truncation=True`` and run without attention mask. Models load with ``from_pretrained`` from
a folder (or, where the user allows downloads, a hub name resolved to its local snapshot).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from opensora_kedro.config.schemas.text import TextEmbeddingParams
from opensora_kedro.hashing import sha256_file
from opensora_kedro.progress import progress as progress_bar
from opensora_kedro.text.cache import CacheUpdate, EmbeddingPlan, Slot
from opensora_kedro.text.params import EmbeddingEncoderParams
from opensora_kedro.text.tiny_encoders import CLIP_POSITIONS, build_tiny_encoder

logger = logging.getLogger(__name__)

ROLES = ("t5", "clip")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Files that make up an encoder (weights, configs, tokenizer); other formats are not loaded.
ENCODER_FILES = ("*.safetensors", "*.bin", "*.json", "*.model", "*.txt")


@dataclass(frozen=True)
class _Kind:
    model: str  # transformers class names: imported late, transformers is slow to import
    tokenizer: str
    config: str
    output: str
    tokenizer_args: tuple[tuple[str, Any], ...] = ()


KINDS = {
    "t5": _Kind("T5EncoderModel", "T5Tokenizer", "T5Config", "last_hidden_state",
                (("legacy", True),)),
    "clip": _Kind("CLIPTextModel", "CLIPTokenizer", "CLIPTextConfig", "pooler_output"),
}  # fmt: skip


def _transformers(name: str) -> Any:
    import transformers

    return getattr(transformers, name)


def resolve_device(device: str) -> torch.device:
    """``auto``: the first CUDA GPU where there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``bf16`` / ``fp16`` / ``fp32``; ``auto``: bf16 (else fp16) on a GPU, fp32 on a CPU."""
    if dtype == "auto":
        if torch.device(device).type != "cuda":
            return torch.float32  # CPU bf16/fp16 kernels are slow or partial
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DTYPES[dtype]


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_HASHES:
        _FILE_HASHES[memo] = sha256_file(path)
    return _FILE_HASHES[memo]


def files_fingerprint(folder: str | Path) -> str:
    """sha256 over the names and contents of an encoder folder's weight/config/tokenizer files.

    Reads every weight byte once per process (about 1.5 GB/s): a real T5-XXL costs tens of
    seconds, the price of knowing the cache was made by exactly these weights.
    """
    folder = Path(folder)
    # Hidden entries are tool state (e.g. huggingface-cli's .cache/), not the model.
    files = sorted(
        {
            path
            for pattern in ENCODER_FILES
            for path in folder.rglob(pattern)
            if path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        }
    )
    if not files:
        raise FileNotFoundError(f"{folder} holds no model files ({', '.join(ENCODER_FILES)})")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def resolve_local(source: str, local_files_only: bool, cache_dir: str | None = None) -> Path:
    """The local folder of an encoder: ``source`` itself, or a hub name's snapshot.

    A hub name is looked up in the Hugging Face cache, and downloaded only when
    ``local_files_only`` is false.
    """
    path = Path(source)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                source,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                allow_patterns=list(ENCODER_FILES),
            )
        )
    except Exception as error:  # noqa: BLE001 - any failure means: not available here
        why = "local_files_only is true: nothing is downloaded" if local_files_only else error
        raise FileNotFoundError(
            f"no text encoder at {source!r}: no such folder, and not in the Hugging Face cache "
            f"({why}); download it there or point from_pretrained at it"
        ) from error


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder ready to load: its local folder and the cache slot its embeddings go to."""

    role: str
    path: str
    max_length: int
    dtype: str  # bf16 / fp16 / fp32
    slot: Slot
    local_files_only: bool = True
    cache_dir: str | None = None


def prepare_encoder(
    role: str, encoder: EmbeddingEncoderParams, dtype: str, device: str = "auto"
) -> EncoderSpec:
    """Locate an encoder and identify it (weights fingerprint, output, dtype) without loading it.

    A fully cached re-run therefore never loads the model.
    """
    kind = KINDS[role]
    source, max_length = encoder.from_pretrained, encoder.max_length
    local_files_only, cache_dir = encoder.local_files_only, encoder.cache_dir
    folder = resolve_local(source, local_files_only, cache_dir)
    config = _transformers(kind.config).from_pretrained(folder, local_files_only=True)
    torch_dtype = resolve_dtype(dtype, resolve_device(device))
    dtype_name = str(torch_dtype).removeprefix("torch.")
    identity = {"role": role, "model": kind.model, "output": kind.output,
                "files": files_fingerprint(folder), "dtype": dtype_name}  # fmt: skip
    encoder_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    shape = (max_length, config.d_model) if role == "t5" else (config.hidden_size,)
    slot = Slot(role, encoder_id, max_length, shape, dtype_name, source=str(source))
    short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype_name]
    return EncoderSpec(role, str(folder), max_length, short, slot, local_files_only, cache_dir)


class TextEmbedder:
    """A T5 or CLIP encoder and its tokenizer, loaded with ``from_pretrained``."""

    def __init__(
        self,
        role: str,
        path: str | Path,
        max_length: int,
        *,
        dtype: str = "fp32",
        device: str = "cpu",
        local_files_only: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        self.role, self.kind, self.max_length = role, KINDS[role], max_length
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        load = {"local_files_only": local_files_only, "cache_dir": cache_dir}
        self.tokenizer = _transformers(self.kind.tokenizer).from_pretrained(
            path, **load, **dict(self.kind.tokenizer_args)
        )
        model = _transformers(self.kind.model).from_pretrained(path, **load, torch_dtype=self.dtype)
        self.model = model.to(self.device).eval().requires_grad_(False)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions is not None and max_length > positions:
            raise ValueError(
                f"{role} max_length {max_length} exceeds the model's {positions} positions"
            )

    @classmethod
    def from_spec(cls, spec: EncoderSpec, device: str = "auto") -> TextEmbedder:
        """Load the encoder a :func:`prepare_encoder` spec describes."""
        return cls(spec.role, spec.path, spec.max_length, dtype=spec.dtype, device=device,
                   local_files_only=spec.local_files_only, cache_dir=spec.cache_dir)  # fmt: skip

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """One batch: T5 ``[B, max_length, d_model]``, CLIP ``[B, hidden]``, on the CPU."""
        tokens = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding="max_length",
            return_tensors="pt",
        )
        # attention_mask=None as in Open-Sora: the diffusion model attends to pads too.
        output = self.model(input_ids=tokens.input_ids.to(self.device), output_hidden_states=False)
        return getattr(output, self.kind.output).cpu()

    def encode_batches(
        self, texts: Sequence[str], batch_size: int, progress: bool = False
    ) -> Iterator[torch.Tensor]:
        """Encode ``texts`` in batches of ``batch_size``, with an optional progress bar."""
        with progress_bar(total=len(texts), desc=f"{self.role} embeddings", unit="caption",
                  disable=not progress) as bar:  # fmt: skip
            for start in range(0, len(texts), batch_size):
                batch = texts[start : start + batch_size]
                yield self.encode(batch)
                bar.update(len(batch))


def rows_per_shard(slot: Slot, shard_max_mb: float) -> int:
    """How many embeddings of ``slot`` fit a shard of ``shard_max_mb`` MiB (at least one)."""
    item = torch.empty((), dtype=getattr(torch, slot.dtype)).element_size()
    return max(1, int(shard_max_mb * 2**20) // (math.prod(slot.shape) * item))


def embed_missing(
    todo: Sequence[tuple[str, str]],
    spec: EncoderSpec,
    *,
    device: str = "auto",
    batch_size: int = 32,
    shard_max_mb: float = 1024,
    progress: bool = False,
) -> Iterator[CacheUpdate]:
    """Embed ``(caption_hash, text)`` pairs with the spec's encoder, one update per shard.

    The encoder is loaded only when there is something to embed, and released after.
    """
    if not todo:
        return
    started = time.perf_counter()
    embedder = TextEmbedder.from_spec(spec, device)
    per_shard = rows_per_shard(spec.slot, shard_max_mb)
    texts = [text for _, text in todo]
    pending: list[torch.Tensor] = []
    done = 0

    def shard(rows: int) -> CacheUpdate:
        nonlocal pending, done
        stacked = torch.cat(pending)
        pending = [stacked[rows:]] if len(stacked) > rows else []
        part = todo[done : done + rows]
        done += rows
        return CacheUpdate(
            slot=spec.slot,
            caption_hashes=[h for h, _ in part],
            keys=[spec.slot.key(text) for _, text in part],
            embeddings=stacked[:rows].clone(),  # not a view: the rest is freed independently
        )

    for batch in embedder.encode_batches(texts, batch_size, progress):
        if tuple(batch.shape[1:]) != spec.slot.shape:
            got = tuple(batch.shape[1:])
            raise ValueError(f"{spec.role} gave {got}, expected {spec.slot.shape}")
        pending.append(batch)
        while sum(map(len, pending)) >= per_shard:
            yield shard(per_shard)
    if pending:
        yield shard(sum(map(len, pending)))
    seconds = time.perf_counter() - started
    logger.info("embedded %d caption(s) with %s on %s in %.1f s (%.0f captions/s, load included)",
                len(todo), spec.role, embedder.device, seconds, len(todo) / seconds)  # fmt: skip
    del embedder  # frees the (GPU) memory before the next encoder loads


def prepare_encoders(
    params: TextEmbeddingParams, captions: Collection[str]
) -> dict[str, EncoderSpec]:
    """Locate both encoders and fingerprint them; build the tiny ones first where allowed.

    A configured folder that exists is used as is (rebuilt only when missing). A missing one
    is built from ``captions`` with ``build_if_missing`` (conf/local) and is an error
    otherwise (conf/cluster), naming the parameter and the path.
    """
    specs = {}
    for role in ROLES:
        encoder = getattr(params, role)
        if not Path(encoder.from_pretrained).exists() and params.build_if_missing:
            positions = max(CLIP_POSITIONS, params.clip.max_length)
            build_tiny_encoder(role, captions, encoder.from_pretrained, params.tiny, positions)
        try:
            specs[role] = prepare_encoder(role, encoder, params.dtype, params.device)
        except FileNotFoundError as error:
            hint = "" if params.build_if_missing else (
                "; or set text_embedding.build_if_missing: true for a tiny random encoder"
            )  # fmt: skip
            message = f"text_embedding.{role}.from_pretrained: {error}{hint}"
            raise FileNotFoundError(message) from error
    return specs


def embed_plan(
    plan: EmbeddingPlan, specs: Mapping[str, EncoderSpec], params: TextEmbeddingParams
) -> Iterator[CacheUpdate]:
    """Every update a plan needs, in commit order: retire damaged shards, append new shards
    (encoder by encoder, on ``params.device``, ``batch_size`` captions per forward pass, shards
    of at most ``shard_max_mb``), then record the slots as current."""
    if plan.retire:
        yield CacheUpdate(retire=list(plan.retire))
    for role, spec in specs.items():
        yield from embed_missing(
            plan.todo.get(role, []), spec, device=params.device, batch_size=params.batch_size,
            shard_max_mb=params.shard_max_mb, progress=params.progress,
        )  # fmt: skip
    yield CacheUpdate(select={role: spec.slot for role, spec in specs.items()})
