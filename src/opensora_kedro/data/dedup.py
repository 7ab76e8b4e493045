"""Near-duplicate clips: perceptual hashes of a few frames per clip, compared through an index.

Each clip gets the 64-bit difference hash (dHash) of ``frames`` frames evenly spaced over it;
two clips are near-duplicates when every pair of corresponding frame hashes differs in at most
``max_distance`` bits (a re-encode, a rescale or a re-upload differs in a few; different
footage in about half). No all-pairs comparison: by the pigeonhole principle two hashes within
``t`` bits agree exactly on one of ``t + 1`` bands of the first frame's hash, so candidates are
the clips that share a band value, and only those are compared in full. Each group of
near-duplicates keeps its first clip by path; the others are rejected as ``duplicate``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from functools import partial

import numpy as np
import pandas as pd
from PIL import Image

from opensora_kedro.data.cached_stage import run_cached_stage
from opensora_kedro.data.engine import LOCAL_ENGINE, EngineSettings, Journal, PerClip
from opensora_kedro.data.scan import FILE_KEY, REJECT_COLUMNS
from opensora_kedro.video.decode import iter_frames

logger = logging.getLogger(__name__)

HASH_SIZE = 8  # an 8 x 8 grid of brightness steps: 64 bits


def dhash(frame: np.ndarray) -> np.uint64:
    """Difference hash of an RGB frame: grey at 9 x 8, one bit per horizontal neighbour pair
    (set where the right pixel is brighter)."""
    grey = Image.fromarray(frame).convert("L").resize((HASH_SIZE + 1, HASH_SIZE), Image.BILINEAR)
    pixels = np.asarray(grey, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).reshape(-1)
    return np.packbits(bits).view(">u8")[0].astype(np.uint64)


def hash_columns(frames: int) -> list[str]:
    """The table's hash columns for ``frames`` frames per clip (int64 holding the 64 bits:
    Parquet and pandas keep signed integers whole)."""
    return [f"dhash_{i}" for i in range(frames)]


def _as_stored(code: np.uint64) -> int:
    return int(np.array(code, dtype=np.uint64).view(np.int64))


def clip_hashes(path: str | os.PathLike, num_frames: int, frames: int) -> list[np.uint64]:
    """dHash of ``frames`` frames evenly spaced over a clip of ``num_frames`` (a still: its
    one frame, repeated)."""
    wanted = np.linspace(0, max(num_frames - 1, 0), frames).round().astype(int)
    found: dict[int, np.uint64] = {}
    for index, frame in enumerate(iter_frames(path)):
        if index in wanted:
            found[index] = dhash(frame)
        if index >= wanted[-1]:
            break
    if not found:
        raise ValueError("no frame could be decoded")
    last = found[max(found)]  # a clip shorter than its metadata: its last decoded frame
    return [found.get(int(i), last) for i in wanted]


def _hash_row(row: dict, frames: int) -> dict:
    """The frame hashes of one clip as stored; never raises (a broken file gets a reason)."""
    try:
        codes = clip_hashes(row["path"], row["num_frames"], frames)
        return {"path": row["path"], **dict(zip(hash_columns(frames), map(_as_stored, codes),
                                                strict=True))}  # fmt: skip
    except Exception as error:  # noqa: BLE001 - one broken file must not stop the run
        return {"path": row["path"], "reason": "hash_failed",
                "detail": f"{type(error).__name__}: {error}"}  # fmt: skip


def hash_videos(
    meta: pd.DataFrame,
    frames: int,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(hashes, rejected)``: the frame hashes of every clip of ``meta`` (unchanged files keep
    those of ``previous`` when hashed with as many frames), and the clips that failed."""
    columns = hash_columns(frames)
    stage = PerClip(partial(_hash_row, frames=frames))
    hashes, rejected = run_cached_stage(meta, stage, "dedup", columns, f"dhash, {frames} frames",
                                        previous, engine, journal)  # fmt: skip
    return hashes.astype(dict.fromkeys([*FILE_KEY, *columns], "int64")), rejected


def near_pairs(codes: np.ndarray, max_distance: int) -> tuple[np.ndarray, int]:
    """Row pairs ``[m, 2]`` (``i < j``) whose every frame hash is within ``max_distance`` bits,
    and how many candidates were compared. Candidates share one of ``max_distance + 1`` bands
    of the first frame's hash, which every such pair does (pigeonhole)."""
    edges = np.linspace(0, 64, max_distance + 2).round().astype(int)
    found, compared = [], 0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        keys = (codes[:, 0] >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)
        for pairs in _equal_key_pairs(keys):
            compared += len(pairs)
            distance = np.bitwise_count(codes[pairs[:, 0]] ^ codes[pairs[:, 1]]).max(axis=1)
            found.append(pairs[distance <= max_distance])
    if not found:
        return np.empty((0, 2), dtype=np.int64), compared
    near = np.sort(np.concatenate(found), axis=1)
    return np.unique(near, axis=0), compared  # a pair may share several bands


def _equal_key_pairs(keys: np.ndarray) -> Iterator[np.ndarray]:
    """Every pair of rows with equal keys, through one sort: rows ``offset`` apart in key
    order that still share their key, for growing offsets."""
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    for offset in range(1, len(keys)):
        same = ranked[:-offset] == ranked[offset:]
        if not same.any():
            return
        yield np.stack([order[:-offset][same], order[offset:][same]], axis=1)


def find_duplicates(hashes: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """Near-duplicates of ``hashes`` (a path and its ``dhash_*`` columns) as rejected rows:
    ``path, stage, reason, detail`` with the clip each one duplicates and their distance."""
    if hashes.empty:
        return pd.DataFrame(columns=REJECT_COLUMNS)
    table = hashes.sort_values("path", ignore_index=True)
    columns = [c for c in table.columns if c.startswith("dhash_")]
    codes = table[columns].to_numpy(np.int64).view(np.uint64)
    near, compared = near_pairs(codes, max_distance)
    keeper = first_of_each_group(near)
    rows = [
        {"path": table.at[i, "path"], "stage": "dedup", "reason": "duplicate",
         "detail": f"duplicate of {table.at[first, 'path']} (frame hashes within "
                   f"{max_distance} bits)"}
        for i, first in sorted(keeper.items()) if i != first
    ]  # fmt: skip
    logger.info("dedup: %d near-duplicate clip(s) among %d (%d candidate pairs compared)",
                len(rows), len(table), compared)  # fmt: skip
    return pd.DataFrame(rows, columns=REJECT_COLUMNS)


def first_of_each_group(pairs: np.ndarray) -> dict[int, int]:
    """For each row in ``pairs``, the lowest row connected to it through them (union-find)."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {i: root(i) for i in list(parent)}
