"""A parquet file that may not exist yet: the previous output of an incremental node."""

from __future__ import annotations

import pandas as pd
from kedro_datasets.pandas import ParquetDataset


class OptionalParquetDataset(ParquetDataset):
    """Loads an empty table when the file is missing (the first run of an incremental node).

    Point it at the file another catalog entry writes, so a node can read what it wrote
    last time: Kedro forbids one dataset as both input and output of a node.
    """

    loads_when_missing = True  # the run checks (hooks.py) do not require the file

    def load(self) -> pd.DataFrame:
        if not self._exists():
            return pd.DataFrame()
        return super().load()
