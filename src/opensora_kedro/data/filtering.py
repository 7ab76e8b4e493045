"""Filtering the video table by thresholds, keeping every removed clip with its rule."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # the schemas import torch, which this module does without
    from opensora_kedro.data.params import FilterParams

logger = logging.getLogger(__name__)


def _threshold_masks(table: pd.DataFrame, rules: FilterParams) -> list[tuple[str, str, pd.Series]]:
    """(reason, detail, mask of rows it removes), in the order they are applied: the
    thresholds (None: no limit; ``max_resolution`` is H * W, Open-Sora's ``--hwmax``) and
    switches of Open-Sora's ``datautil`` flags."""
    checks = [
        ("too_few_frames", "num_frames", "<", rules.min_frames),
        ("too_many_frames", "num_frames", ">", rules.max_frames),
        ("too_low", "height", "<", rules.min_height),
        ("too_narrow", "width", "<", rules.min_width),
        ("too_many_pixels", "resolution", ">", rules.max_resolution),
        ("fps_too_low", "fps", "<", rules.min_fps),
        ("fps_too_high", "fps", ">", rules.max_fps),
        ("motion_too_low", "score_vmafmotion", "<", rules.min_motion),
        ("motion_too_high", "score_vmafmotion", ">", rules.max_motion),
        ("aesthetic_too_low", "aesthetic_score", "<", rules.min_aesthetic),
        ("caption_mismatch", "match_score", "<", rules.min_match),
    ]
    masks = []
    for reason, column, op, limit in checks:
        if limit is None:
            continue
        values = table[column]
        # NaN (an image's fps) never breaks a bound.
        mask = values < limit if op == "<" else values > limit
        masks.append((reason, f"{column} {op} {limit}", mask.fillna(False).astype(bool)))
    if rules.remove_empty_captions:
        empty = table["text"].fillna("").astype(str).str.strip() == ""
        masks.append(("empty_caption", "the caption is empty", empty))
    if rules.remove_duplicate_paths:
        masks.append(("duplicate_path", "an earlier row has this path", table["path"].duplicated()))
    return masks


def filter_table(table: pd.DataFrame, rules: FilterParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply ``rules``; returns the kept rows and the removed ones (``path, stage, reason,
    detail``), each removed row named by the first rule that removed it."""
    removed = pd.Series(False, index=table.index)
    rejected = []
    for reason, detail, mask in _threshold_masks(table, rules):
        hit = mask & ~removed
        removed |= hit
        values = table.loc[hit, "path"]
        rejected.append(pd.DataFrame({"path": values, "reason": reason, "detail": detail}))
    rejected_table = (
        pd.concat(rejected, ignore_index=True)
        if rejected
        else pd.DataFrame(columns=["path", "reason", "detail"])
    )
    rejected_table.insert(1, "stage", "filter")
    logger.info("filter kept %d of %d clips", int((~removed).sum()), len(table))
    return table.loc[~removed].reset_index(drop=True), rejected_table


def removal_report(table: pd.DataFrame, removed: pd.DataFrame, rules: FilterParams) -> pd.DataFrame:
    """Every active rule, its threshold, and how many (and what share) of ``table``'s clips it
    removed (``removed`` as :func:`filter_table` returns it: a clip counts for its first rule)."""
    counts = removed["reason"].value_counts()
    rows = [
        {"rule": reason, "threshold": detail, "removed": int(counts.get(reason, 0)),
         "share": counts.get(reason, 0) / max(len(table), 1)}
        for reason, detail, _ in _threshold_masks(table, rules)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["rule", "threshold", "removed", "share"])
