"""A table a node hands to the processes of a launched job (training rows, a sampling plan)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from opensora_kedro.files import write_atomic


class HandoverTableDataset(AbstractDataset[pd.DataFrame, str]):
    """Saves a table as Parquet (atomically: a job never reads half a file); loads the
    file's path, which the job's workers read themselves, in their own processes."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> str:
        if not self._filepath.is_file():
            raise DatasetError(f"{self._filepath} is missing: run the node that writes it first")
        return str(self._filepath)

    def save(self, data: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        data.to_parquet(buffer)
        write_atomic(self._filepath, buffer.getvalue())

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
