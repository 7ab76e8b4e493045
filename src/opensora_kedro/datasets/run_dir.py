"""A working folder a node writes into itself (a training run's checkpoints and job files, the
data stages' journals), handed to the node as its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class RunDirectoryDataset(AbstractDataset[None, str]):
    """Loads the folder's path; the job writes into it (checkpoints it resumes from).
    Read-only from Kedro's side: nothing is saved through it."""

    loads_when_missing = True  # made on load

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> str:
        self._path.mkdir(parents=True, exist_ok=True)
        return str(self._path)

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path} is written by the node that loads it, not by Kedro")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
