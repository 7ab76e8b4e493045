"""A parquet table of media files whose paths are stored relative to the dataset root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from kedro_datasets.pandas import ParquetDataset

from opensora_kedro.data.table_paths import check_files, to_absolute, to_relative

PATH_COLUMNS = ("path", "source")  # a clip's file, and the video it was cut from


class VideoTableDataset(ParquetDataset):
    """``video_meta`` / ``training_table`` and friends: ``path`` (and a cut clip's ``source``)
    is stored relative to ``root`` (the raw video folder), or to ``shots_root`` (the folder
    shots are cut into), and comes back absolute.

    Args:
        filepath: the parquet file.
        root: the folder the table's files are in (relative to the project, as the raw
            videos' catalog entry names it).
        shots_root: the folder long videos are cut into (shot splitting), if any.
        check_files: on load, fail naming ``root`` when files of the table are missing
            there (off for tables of earlier results, whose files may be gone).
        optional: load an empty table when the file does not exist yet.
    """

    def __init__(
        self,
        filepath: str,
        root: str,
        shots_root: str | None = None,
        check_files: bool = True,
        optional: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(filepath=filepath, **kwargs)
        self._root = Path(root)
        self._shots_root = Path(shots_root) if shots_root is not None else None
        self._check = check_files
        self.loads_when_missing = optional

    def load(self) -> pd.DataFrame:
        if self.loads_when_missing and not self._exists():
            return pd.DataFrame()
        table = super().load()
        if "path" not in table.columns:
            return table
        for column in PATH_COLUMNS:
            if column in table.columns:
                table[column] = to_absolute(table[column], self._root, self._shots_root)
        if self._check:
            check_files(table["path"], self._root, str(self._filepath))
        return table

    def save(self, data: pd.DataFrame) -> None:
        relative = {
            column: to_relative(data[column], self._root, str(self._filepath), self._shots_root)
            for column in PATH_COLUMNS
            if column in data.columns
        }
        super().save(data.assign(**relative))

    def check(self) -> None:
        """What loading would check, reading only the ``path`` column (run checks)."""
        if not self._check or not self._exists():
            return
        if "path" not in pq.read_schema(str(self._filepath)).names:
            return
        stored = pd.read_parquet(str(self._filepath), columns=["path"])
        paths = to_absolute(stored["path"], self._root, self._shots_root)
        check_files(paths, self._root, str(self._filepath))

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "root": str(self._root), "shots_root": str(self._shots_root)}
