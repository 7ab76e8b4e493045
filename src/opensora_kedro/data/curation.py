"""Learned curation stages over the clip table: VLM captions and quality scores."""

from __future__ import annotations

import pandas as pd

from opensora_kedro.captioning.params import CaptioningParams
from opensora_kedro.captioning.vlm import CAPTION_SETTINGS, VlmCaptioner
from opensora_kedro.data.cached_stage import run_cached_stage, settings_fingerprint
from opensora_kedro.data.engine import LOCAL_ENGINE, EngineSettings, Journal
from opensora_kedro.data.scan import FILE_KEY, REJECT_COLUMNS
from opensora_kedro.hashing import caption_hash
from opensora_kedro.quality.clip_scores import RESULT_COLUMNS as QUALITY_COLUMNS
from opensora_kedro.quality.clip_scores import SCORE_SETTINGS, QualityScorer
from opensora_kedro.quality.params import QualityParams
from opensora_kedro.quality.tiny_models import build_missing_tiny_models

CAPTION_COLUMNS = ["caption", "caption_model"]


def _uncaptioned(clips: pd.DataFrame) -> pd.Series:
    return clips["text"].isna() | (clips["text"].astype(str).str.strip() == "")


def caption_clips(
    clips: pd.DataFrame,
    params: CaptioningParams,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(captioned clips, captions, rejected)``.

    With ``params.enabled`` the VLM captions the clips without a caption (every clip with
    ``overwrite``), reusing the captions of unchanged clips; ``caption_model`` names where a
    clip's caption came from (None: the captions table). Without, clips lacking a caption are
    rejected as ``no_caption`` and the last captions are kept as they were.
    """
    missing = _uncaptioned(clips)
    clips = clips.assign(caption_model=None)
    if not params.enabled:
        detail = "no caption (none in the captions table, or a shot cut from a longer video) " \
                 "and data_processing.captioning is off"  # fmt: skip
        rejected = clips.loc[missing, ["path"]].assign(stage="captioning", reason="no_caption",
                                                       detail=detail)  # fmt: skip
        kept = previous if previous is not None and not previous.empty else pd.DataFrame()
        return clips[~missing].reset_index(drop=True), kept, rejected[REJECT_COLUMNS]
    wanted = clips if params.overwrite else clips[missing]
    captions, rejected = run_cached_stage(
        wanted, VlmCaptioner(params), "captioning", CAPTION_COLUMNS,
        settings_fingerprint(params, CAPTION_SETTINGS), previous, engine, journal,
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
    params: QualityParams,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, rejected)``: aesthetic and text-video match scores of every clip (an empty
    table unless ``params.enabled``). A clip keeps its last scores while its file, its caption
    and the settings are unchanged. With ``build_if_missing`` the tiny random models are built
    first where their paths hold nothing (tokenizer from the clips' captions)."""
    if not params.enabled:
        return pd.DataFrame(columns=["path", *QUALITY_COLUMNS]), pd.DataFrame(
            columns=REJECT_COLUMNS
        )
    if params.build_if_missing:
        build_missing_tiny_models(params, clips["text"].dropna().tolist())
    return run_cached_stage(
        clips, QualityScorer(params), "quality", QUALITY_COLUMNS,
        settings_fingerprint(params, SCORE_SETTINGS), previous, engine, journal,
        key_columns=("path", *FILE_KEY, "caption_hash"), input_columns=("num_frames", "text"),
    )  # fmt: skip
