"""A folder holding a trained model: ``model.safetensors`` and ``config.json``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ModelDirDataset(AbstractDataset[dict[str, Any], str]):
    """Saves ``{"weights": <safetensors file to copy>, "config": {...}}`` into the folder,
    replacing it atomically; loads the folder's path (models load themselves from it).
    An ``optional`` model that was never trained loads as None instead of failing."""

    def __init__(
        self, path: str, optional: bool = False, metadata: dict[str, Any] | None = None
    ) -> None:
        self._path = Path(path)
        self._optional = optional
        self.metadata = metadata

    def load(self) -> str | None:
        if not (self._path / WEIGHTS).is_file():
            if self._optional:
                return None
            raise DatasetError(f"no trained model at {self._path} (no {WEIGHTS}); train it first")
        return str(self._path)

    def save(self, data: dict[str, Any]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self._path.name}.", dir=self._path.parent))
        try:
            shutil.copyfile(data["weights"], staging / WEIGHTS)
            (staging / CONFIG).write_text(json.dumps(data["config"], indent=1, default=str))
            retired = self._path.with_name(f".{self._path.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            if self._path.exists():
                os.replace(self._path, retired)
            os.replace(staging, self._path)
            shutil.rmtree(retired, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _exists(self) -> bool:
        return (self._path / WEIGHTS).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
