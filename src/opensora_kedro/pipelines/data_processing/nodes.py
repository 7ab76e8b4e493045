"""Nodes of the ``data_processing`` pipeline: thin adapters over ``opensora_kedro.data``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from opensora_kedro.captioning.params import CaptioningParams
from opensora_kedro.data.bucket import assign_buckets
from opensora_kedro.data.bucket_config import BucketConfig
from opensora_kedro.data.bucket_report import bucket_report, plot_bucket_report
from opensora_kedro.data.curation import caption_clips, score_quality
from opensora_kedro.data.dedup import find_duplicates, hash_videos
from opensora_kedro.data.engine import EngineSettings, Journal
from opensora_kedro.data.filtering import filter_table, removal_report
from opensora_kedro.data.folder import VideoFolder
from opensora_kedro.data.motion_table import score_motion
from opensora_kedro.data.params import (
    DedupParams,
    FilterParams,
    MotionParams,
    RayParams,
    ScanParams,
    ShotParams,
)
from opensora_kedro.data.scan import REJECT_COLUMNS, build_video_table
from opensora_kedro.data.semantic_dedup import embed_videos, find_embedding_duplicates
from opensora_kedro.data.shot_table import RESULT_COLUMNS, split_videos, whole_clips
from opensora_kedro.data.training_table import build_training_table
from opensora_kedro.params import BucketConfigTree
from opensora_kedro.quality.params import QualityParams
from opensora_kedro.training.params import VideoDatasetParams

Engine = Literal["local", "ray"]
StageParams = (
    ScanParams | ShotParams | DedupParams | MotionParams | CaptioningParams | QualityParams
)


def _engine(engine: Engine, ray: RayParams, workers: int | None = None) -> EngineSettings:
    """Where a stage runs: the chosen engine; local threads as the stage asks (``workers``;
    a model stage keeps one thread whatever it is)."""
    return EngineSettings(workers=workers) if engine == "local" else EngineSettings(ray=ray)


def _journal(folder: str, stage: str, params: StageParams) -> Journal:
    """The stage's journal; results computed under other parameters (the number of workers
    aside) are not reused."""
    fingerprint = params.model_dump_json(exclude={"workers"})
    return Journal(Path(folder) / f"{stage}.jsonl", fingerprint)


def _metrics(**values: float) -> dict:
    """Values in the form MlflowMetricsHistoryDataset logs."""
    return {name: {"value": float(value), "step": 0} for name, value in values.items()}


def scan_videos(
    folder: VideoFolder,
    captions: pd.DataFrame,
    previous: pd.DataFrame,
    params: ScanParams,
    engine: Engine,
    ray: RayParams,
    journals: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every raw file (unchanged files keep their last result): video table and rejects."""
    return build_video_table(
        folder, captions, _engine(engine, ray, params.workers), params.check_frames, previous,
        _journal(journals, "scan", params),
    )  # fmt: skip


def split_shots(
    meta: pd.DataFrame,
    folder: VideoFolder,
    previous: pd.DataFrame,
    shots_dir: str,
    params: ShotParams,
    engine: Engine,
    ray: RayParams,
    journals: str,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Each video's shots as clip rows (long videos cut into files; unchanged videos keep
    their cuts): the per-video results, the clip table and the dropped shots."""
    if not params.enabled:
        kept = previous if not previous.empty else pd.DataFrame(columns=RESULT_COLUMNS)
        return kept, whole_clips(meta), pd.DataFrame(columns=REJECT_COLUMNS)
    return split_videos(
        meta, folder.root, params, shots_dir, _engine(engine, ray, params.workers), previous,
        _journal(journals, "shots", params),
    )  # fmt: skip


def hash_clips(
    meta: pd.DataFrame,
    previous: pd.DataFrame,
    params: DedupParams,
    engine: Engine,
    ray: RayParams,
    journals: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frame hashes (or CLIP embeddings, ``method: clip``) of every clip (unchanged clips keep
    their last ones) and the failures."""
    if not params.enabled:
        return pd.DataFrame(columns=["path"]), pd.DataFrame(columns=REJECT_COLUMNS)
    run_on, journal = _engine(engine, ray, params.workers), _journal(journals, "dedup", params)
    if params.method == "clip":
        return embed_videos(meta, params, run_on, previous, journal)
    return hash_videos(meta, params.frames, run_on, previous, journal)


def drop_duplicates(
    meta: pd.DataFrame, hashes: pd.DataFrame, params: DedupParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The clips that are no near-duplicate of another (nor failed hashing), and the rest."""
    if not params.enabled:
        return meta, pd.DataFrame(columns=REJECT_COLUMNS)
    if params.method == "clip":
        duplicates = find_embedding_duplicates(hashes, params.min_similarity)
    else:
        duplicates = find_duplicates(hashes, params.max_distance)
    kept = meta["path"].isin(hashes["path"]) & ~meta["path"].isin(duplicates["path"])
    return meta[kept].reset_index(drop=True), duplicates


def score_videos(
    meta: pd.DataFrame,
    previous: pd.DataFrame,
    params: MotionParams,
    engine: Engine,
    ray: RayParams,
    journals: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """VMAF motion score of every clip (unchanged clips keep their last score)."""
    return score_motion(meta, params, _engine(engine, ray, params.workers), previous,
                        _journal(journals, "motion", params))  # fmt: skip


def caption_videos(
    clips: pd.DataFrame,
    previous: pd.DataFrame,
    params: CaptioningParams,
    engine: Engine,
    ray: RayParams,
    journals: str,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Captions from the VLM for the clips without one (or all): the captioned clips, the
    captions (kept from run to run) and the clips left without a caption."""
    return caption_clips(clips, params, _engine(engine, ray), previous,
                         _journal(journals, "captioning", params))  # fmt: skip


def score_clip_quality(
    clips: pd.DataFrame,
    previous: pd.DataFrame,
    params: QualityParams,
    engine: Engine,
    ray: RayParams,
    journals: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Aesthetic and text-video match scores of every clip (unchanged clips keep theirs)."""
    return score_quality(clips, params, _engine(engine, ray), previous,
                         _journal(journals, "quality", params))  # fmt: skip


def filter_videos(
    meta: pd.DataFrame, scores: pd.DataFrame, quality: pd.DataFrame, params: FilterParams
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Join the scores and apply the thresholds of ``data_processing.filter``: kept clips,
    removed ones, and each rule's threshold and share removed (table and metrics)."""
    table = meta.merge(scores[["path", "score_vmafmotion"]], on="path", how="inner")
    table = table.merge(quality[["path", "aesthetic_score", "match_score"]], on="path", how="left")
    kept, removed = filter_table(table, params)
    report = removal_report(table, removed, params)
    shares = {f"removed_share_{r}": s for r, s in zip(report["rule"], report["share"], strict=True)}
    return kept, removed, report, _metrics(clips_in=len(table), clips_kept=len(kept), **shares)


def make_training_table(table: pd.DataFrame, dataset: VideoDatasetParams) -> pd.DataFrame:
    """Training captions (fps / motion suffix per the stage's dataset settings)."""
    return build_training_table(table, dataset.fps_max, dataset.vmaf)


def report_buckets(
    table: pd.DataFrame, bucket_config: BucketConfigTree, dataset: VideoDatasetParams, seed: int
):
    """How the training table falls into the stage's buckets (epoch 0): table, plot, metrics."""
    config = BucketConfig.from_tree(bucket_config)  # the vectorised assignment's form
    assignment = assign_buckets(table, config, seed=seed, epoch=0, fps_max=dataset.fps_max)
    report = bucket_report(assignment)
    assigned = report["skip_reason"].isna()
    metrics = _metrics(
        clips=len(table),
        bucketed_clips=report.loc[assigned, "samples"].sum(),
        full_batches=report.loc[assigned, "batches"].sum(),
        buckets_used=int(assigned.sum()),
    )
    return report, plot_bucket_report(report), metrics


def collect_rejected(*tables: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Every clip left out, from every stage, with the rule that left it out."""
    rejected = pd.concat([t.reindex(columns=REJECT_COLUMNS) for t in tables], ignore_index=True)
    counts = rejected.groupby("stage").size()
    return rejected, _metrics(**{f"rejected_{stage}": n for stage, n in counts.items()})
