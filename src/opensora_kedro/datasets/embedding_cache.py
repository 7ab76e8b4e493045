"""The text-embedding cache (a folder of safetensors shards and manifests) as a Kedro dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from opensora_kedro.text.cache import CacheUpdate, EmbeddingCache, Verify
from opensora_kedro.text.cache_writer import write_update


class EmbeddingCacheDataset(AbstractDataset[CacheUpdate, EmbeddingCache]):
    """Loads an :class:`EmbeddingCache` reader; each save appends one :class:`CacheUpdate`.

    Saving never rewrites a shard: it writes a new one (temp file + rename, its manifest
    last), moves damaged shards named by the update to ``corrupt/``, and records the slots
    in use. A node that yields updates (a generator) is saved update by update, so a run
    holds at most one shard in memory. Loading a folder that does not exist gives an empty
    cache: the first run of the pipeline reads it as "nothing cached yet".
    """

    def __init__(
        self, path: str, verify: Verify = "full", metadata: dict[str, Any] | None = None
    ) -> None:
        if verify not in ("full", "size"):
            raise DatasetError(f"verify must be 'full' or 'size', not {verify!r}")
        self._path = Path(path)
        self._verify: Verify = verify
        self.metadata = metadata

    loads_when_missing = True  # a missing cache reads as empty

    def load(self) -> EmbeddingCache:
        return EmbeddingCache.open(self._path, self._verify)

    def save(self, data: CacheUpdate) -> None:
        if not isinstance(data, CacheUpdate):
            raise DatasetError(f"expected a CacheUpdate, got {type(data).__name__}")
        write_update(self._path, data)

    def _exists(self) -> bool:
        return (self._path / "shards").is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "verify": self._verify}
