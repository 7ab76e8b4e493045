"""Learned curation stages over the clip table: VLM captions and quality scores."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd

from opensora_kedro.captioning.vlm import CaptionSettings, VlmCaptioner
from opensora_kedro.data.cached_stage import run_cached_stage
from opensora_kedro.data.engine import LOCAL_ENGINE, EngineSettings, Journal
from opensora_kedro.data.video_table import FILE_KEY, REJECT_COLUMNS
from opensora_kedro.hashing import caption_hash
from opensora_kedro.quality.clip_scores import RESULT_COLUMNS as QUALITY_COLUMNS
from opensora_kedro.quality.clip_scores import QualityScorer, QualitySettings

CAPTION_COLUMNS = ["caption", "caption_model"]


def _fingerprint(settings: object) -> str:
    return json.dumps(asdict(settings), sort_keys=True)


def _uncaptioned(clips: pd.DataFrame) -> pd.Series:
    return clips["text"].isna() | (clips["text"].astype(str).str.strip() == "")


def caption_clips(
    clips: pd.DataFrame,
    settings: CaptionSettings | None,
    overwrite: bool = False,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(captioned clips, captions, rejected)``.

    With ``settings`` the VLM captions the clips without a caption (every clip with
    ``overwrite``), reusing the captions of unchanged clips; ``caption_model`` names where a
    clip's caption came from (None: the captions table). Without, clips lacking a caption are
    rejected as ``no_caption`` and the last captions are kept as they were.
    """
    missing = _uncaptioned(clips)
    clips = clips.assign(caption_model=None)
    if settings is None:
        detail = "no caption (none in the captions table, or a shot cut from a longer video) " \
                 "and data_processing.captioning is off"  # fmt: skip
        rejected = clips.loc[missing, ["path"]].assign(stage="captioning", reason="no_caption",
                                                       detail=detail)  # fmt: skip
        kept = previous if previous is not None and not previous.empty else pd.DataFrame()
        return clips[~missing].reset_index(drop=True), kept, rejected[REJECT_COLUMNS]
    wanted = clips if overwrite else clips[missing]
    captions, rejected = run_cached_stage(
        wanted, VlmCaptioner(settings), "captioning", CAPTION_COLUMNS, _fingerprint(settings),
        previous, engine, journal,
    )  # fmt: skip
    by_path = captions.set_index("path")
    written = clips["path"].isin(by_path.index)
    clips.loc[written, "text"] = clips.loc[written, "path"].map(by_path["caption"])
    clips.loc[written, "caption_model"] = clips.loc[written, "path"].map(by_path["caption_model"])
    clips.loc[written, "caption_hash"] = clips.loc[written, "text"].map(caption_hash)
    # A clip whose own caption the VLM failed to replace keeps it; only uncaptioned ones go.
    lost = clips["path"].isin(rejected["path"]) & ~written & missing
    rejected = rejected[rejected["path"].isin(clips.loc[lost, "path"])]
    return clips[~lost].reset_index(drop=True), captions, rejected.reset_index(drop=True)


def score_quality(
    clips: pd.DataFrame,
    settings: QualitySettings | None,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, rejected)``: aesthetic and text-video match scores of every clip (an empty
    table without ``settings``). A clip keeps its last scores while its file, its caption and
    the settings are unchanged."""
    if settings is None:
        return pd.DataFrame(columns=["path", *QUALITY_COLUMNS]), pd.DataFrame(
            columns=REJECT_COLUMNS
        )
    return run_cached_stage(
        clips, QualityScorer(settings), "quality", QUALITY_COLUMNS, _fingerprint(settings),
        previous, engine, journal, key_columns=("path", *FILE_KEY, "caption_hash"),
        input_columns=("num_frames", "text"),
    )  # fmt: skip
