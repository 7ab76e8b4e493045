"""A file of raw bytes (a GIF, say), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from opensora_kedro.files import write_atomic


class BinaryFileDataset(AbstractDataset[bytes, bytes]):
    """Saves and loads ``bytes`` as one file at ``filepath``."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: bytes) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._filepath, data)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
