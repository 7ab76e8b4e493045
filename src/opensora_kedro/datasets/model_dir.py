"""A folder holding a trained model: ``model.safetensors``, ``config.json`` [and ``lora/``]."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from opensora_kedro.datasets.folder_swap import replace_folder

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
LORA = "lora"


class ModelDirDataset(AbstractDataset[dict[str, Any], str]):
    """Saves ``{"weights": <safetensors file to copy>, "config": {...}[, "lora": <adapter
    folder to copy as lora/>]}`` into the folder,
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
        def fill(staging: Path) -> None:
            shutil.copyfile(data["weights"], staging / WEIGHTS)
            if data.get("lora"):  # a LoRA adapter to apply on top of the weights
                shutil.copytree(data["lora"], staging / LORA)
            (staging / CONFIG).write_text(json.dumps(data["config"], indent=1, default=str))

        replace_folder(self._path, fill)

    def _exists(self) -> bool:
        return (self._path / WEIGHTS).is_file()

    @property
    def loads_when_missing(self) -> bool:
        """An optional model loads as None when it was never trained."""
        return self._optional

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
