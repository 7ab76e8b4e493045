"""The clips kept out of training, for the evaluation pipeline's held-out loss."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd


def split_holdout(table: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, held_out)`` by a hash of each file name: stable when rows are added or
    reordered and when the data folder moves."""
    if fraction <= 0:
        return table.reset_index(drop=True), table.iloc[:0].reset_index(drop=True)
    names = table["path"].map(lambda p: Path(p).name)
    draws = names.map(lambda n: int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) / 16**8)
    held = draws < fraction
    if held.all():
        raise ValueError(
            f"holdout_fraction {fraction} keeps every one of the {len(table)} clips out of training"
        )
    return table[~held].reset_index(drop=True), table[held].reset_index(drop=True)
