"""Content hashes: of files (checkpoint manifests, cache shards, encoder fingerprints) and of
captions (the text-embedding cache's key)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 22  # 4 MiB: large files are hashed without being read whole


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def caption_hash(text: str) -> str:
    """A stable key for a caption: the sha256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
