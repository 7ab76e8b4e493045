"""Paths in stored tables, relative to the dataset root they came from.

Open-Sora's CSVs name clips relative to the data path; stored tables here do the same, so
a copied or moved project (or a data folder restored elsewhere and pointed at) reads its
own files, never another folder's. In memory a table holds absolute paths: the root is
joined when the table is loaded and taken off when it is saved. Clips cut from the raw videos
(shot splitting) live in a second folder, the shots root; their paths are stored relative to
it behind :data:`SHOTS_PREFIX`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from opensora_kedro.config.errors import UserConfigError

CHECKED_ROWS = 1000  # rows whose files are checked on load, evenly spaced
SHOTS_PREFIX = "shots:"


class TableRootError(UserConfigError):
    """A table's files are not (all) where it says they are."""


def to_relative(
    paths: pd.Series,
    root: str | os.PathLike,
    table: str = "table",
    shots_root: str | os.PathLike | None = None,
) -> pd.Series:
    """``paths`` relative to ``root`` (POSIX), or to ``shots_root`` behind
    :data:`SHOTS_PREFIX`; relative paths are kept as they are.

    Raises:
        TableRootError: a path outside both roots (the table would not survive a move).
    """
    base = Path(root).resolve()
    shots = Path(shots_root).resolve() if shots_root is not None else None
    relative = []
    outside = []
    for value in paths.astype(str):
        path = Path(value)
        if not path.is_absolute():
            relative.append(value)
        elif path.resolve().is_relative_to(base):
            relative.append(path.resolve().relative_to(base).as_posix())
        elif shots is not None and path.resolve().is_relative_to(shots):
            relative.append(SHOTS_PREFIX + path.resolve().relative_to(shots).as_posix())
        else:
            outside.append(value)
            relative.append(value)
    if outside:
        raise TableRootError(
            f"{table}: {len(outside)} path(s) outside its dataset root {base}",
            [
                f"e.g. {outside[0]}",
                "set `root` of the catalog entry to the folder the files are in",
            ],
        )
    return pd.Series(relative, index=paths.index, dtype=object)


def to_absolute(
    paths: pd.Series, root: str | os.PathLike, shots_root: str | os.PathLike | None = None
) -> pd.Series:
    """``paths`` joined to ``root``, or to ``shots_root`` for those behind
    :data:`SHOTS_PREFIX` (absolute paths of older tables are kept)."""
    base = Path(root).resolve()
    shots = Path(shots_root).resolve() if shots_root is not None else None

    def absolute(value: str) -> str:
        if value.startswith(SHOTS_PREFIX):
            if shots is None:
                raise TableRootError(
                    f"a path of the table is a cut shot ({value}) but its dataset has no "
                    "shots_root",
                    ["set `shots_root` of its catalog entry to the folder shots are cut into"],
                )
            return str(shots / value.removeprefix(SHOTS_PREFIX))
        return str(base / value)

    return pd.Series([absolute(p) for p in paths.astype(str)], index=paths.index, dtype=object)


def check_files(paths: pd.Series, root: str | os.PathLike, table: str = "table") -> None:
    """Fail, naming the root, when files of the table are missing (up to
    :data:`CHECKED_ROWS` rows, evenly spaced, are looked at).

    Raises:
        TableRootError: listing how many of the checked files are missing and one of them.
    """
    if paths.empty:
        return
    step = max(len(paths) // CHECKED_ROWS, 1)
    checked = paths.iloc[::step]
    missing = [p for p in checked.astype(str) if not os.path.exists(p)]
    if missing:
        raise TableRootError(
            f"{table}: {len(missing)} of {len(checked)} checked files are missing under its "
            f"dataset root {Path(root).resolve()}",
            [
                f"e.g. {missing[0]}",
                "the table was made from another folder, or the files moved: point `root` of "
                "its catalog entry at the folder the table came from, or re-run "
                "data_processing on the files that are there",
            ],
        )


def table_fingerprint(table: pd.DataFrame) -> str:
    """A content hash of a table of clips, the same wherever its folder lies: row order,
    every column, and paths relative to their common folder."""
    columns = sorted(map(str, table.columns))
    content = table[columns].copy() if columns else table.copy()
    if "path" in content.columns and len(content):
        paths = content["path"].astype(str)
        common = os.path.commonpath([os.path.dirname(p) or "." for p in paths])
        content["path"] = [os.path.relpath(p, common) for p in paths]
    hashes = pd.util.hash_pandas_object(content.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes() + ",".join(columns).encode()).hexdigest()
