"""Writing the text-embedding cache (:mod:`.cache`): one new shard per update, its manifest
written last, damaged shards moved aside, the roles' current slots recorded."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from safetensors.torch import save as safetensors_bytes

from opensora_kedro.files import write_atomic
from opensora_kedro.text.cache import FORMAT, TENSOR, CacheUpdate, Slot

logger = logging.getLogger(__name__)


def _shard_name(slot: Slot) -> str:
    # Time first: names sort in write order, which decides which copy of an entry wins.
    return f"{time.time_ns():020d}-{slot.role}-{slot.id[:12]}-{uuid.uuid4().hex[:8]}"


def write_shard(root: str | Path, update: CacheUpdate) -> str:
    """Write the update's embeddings as one new shard (+ manifest); returns the shard name."""
    slot, embeddings = update.slot, update.embeddings
    if slot is None or embeddings is None:
        raise ValueError("a shard needs a slot and embeddings")
    if embeddings.shape[1:] != slot.shape or str(embeddings.dtype) != f"torch.{slot.dtype}":
        raise ValueError(
            f"embeddings {tuple(embeddings.shape[1:])} {embeddings.dtype} do not match "
            f"slot {slot.role}: {slot.shape} {slot.dtype}"
        )
    if not len(update.keys) == len(update.caption_hashes) == embeddings.shape[0]:
        raise ValueError("keys, caption_hashes and embeddings differ in length")
    shard_dir = Path(root) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    name = _shard_name(slot)
    content = safetensors_bytes(
        {TENSOR: embeddings.detach().cpu().contiguous()},
        metadata={"format": FORMAT, "slot": slot.id, "role": slot.role},
    )
    write_atomic(shard_dir / f"{name}.safetensors", content)
    manifest = {
        "format": FORMAT,
        "shard": f"{name}.safetensors",
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "slot": slot.to_dict(),
        "caption_hashes": list(update.caption_hashes),
        "keys": list(update.keys),
    }
    # The manifest commits the shard: written last, so a crash never indexes a partial file.
    write_atomic(shard_dir / f"{name}.json", json.dumps(manifest).encode())
    return name


def retire_shards(root: str | Path, names: Iterable[str]) -> None:
    """Move damaged shards (and their manifests) to ``corrupt/``: never read, kept to inspect."""
    root = Path(root)
    for name in names:
        (root / "corrupt").mkdir(parents=True, exist_ok=True)
        for suffix in (".safetensors", ".json"):
            source = root / "shards" / f"{name}{suffix}"
            if source.exists():
                os.replace(source, root / "corrupt" / source.name)
        logger.warning("moved damaged text-embedding shard %s to %s", name, root / "corrupt")


def write_update(root: str | Path, update: CacheUpdate) -> None:
    """Apply one :class:`CacheUpdate`: retire damaged shards, append a shard, record slots."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    retire_shards(root, update.retire)
    if update.embeddings is not None and len(update.keys):
        write_shard(root, update)
    if update.select:
        current = {role: slot.to_dict() for role, slot in update.select.items()}
        write_atomic(root / "current.json", json.dumps(current, indent=1).encode())
