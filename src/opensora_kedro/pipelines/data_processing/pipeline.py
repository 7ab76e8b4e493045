"""``data_processing``: scan -> shots -> frame hashes -> drop near-duplicates -> motion score
-> captions -> quality scores -> filter -> training captions -> bucket report."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    caption_videos,
    collect_rejected,
    drop_duplicates,
    filter_videos,
    hash_clips,
    make_training_table,
    report_buckets,
    scan_videos,
    score_clip_quality,
    score_videos,
    split_shots,
)

# Every per-clip node runs on the configured engine and journals its finished clips.
ENGINE = ["params:data_processing.engine", "params:data_processing.ray", "data_processing_journals"]


def create_pipeline(stage: str = "diffusion_stage1", **kwargs) -> Pipeline:
    """``stage`` is the training stage whose dataset settings and buckets the table is for."""
    return Pipeline(
        [
            Node(
                scan_videos,
                ["raw_videos", "raw_captions", "video_meta_previous",
                 "params:data_processing.scan", *ENGINE],
                ["video_meta", "scan_rejected"],
                name="scan_videos",
            ),
            Node(
                split_shots,
                ["video_meta", "raw_videos", "video_shots_previous", "shot_clips",
                 "params:data_processing.shots", *ENGINE],
                ["video_shots", "video_clips", "shot_rejected"],
                name="split_shots",
            ),
            Node(
                hash_clips,
                ["video_clips", "video_hashes_previous", "params:data_processing.dedup", *ENGINE],
                ["video_hashes", "hash_rejected"],
                name="hash_clips",
            ),
            Node(
                drop_duplicates,
                ["video_clips", "video_hashes", "params:data_processing.dedup"],
                ["unique_videos", "duplicate_rejected"],
                name="drop_duplicates",
            ),
            Node(
                score_videos,
                ["unique_videos", "motion_scores_previous", "params:data_processing.motion",
                 *ENGINE],
                ["motion_scores", "motion_rejected"],
                name="score_motion",
            ),
            Node(
                caption_videos,
                ["unique_videos", "clip_captions_previous", "params:data_processing.captioning",
                 *ENGINE],
                ["captioned_videos", "clip_captions", "caption_rejected"],
                name="caption_clips",
            ),
            Node(
                score_clip_quality,
                ["captioned_videos", "quality_scores_previous", "params:data_processing.quality",
                 *ENGINE],
                ["quality_scores", "quality_rejected"],
                name="score_quality",
            ),
            Node(
                filter_videos,
                ["captioned_videos", "motion_scores", "quality_scores",
                 "params:data_processing.filter"],
                ["filtered_videos", "filter_rejected", "filter_report", "filter_metrics"],
                name="filter_videos",
            ),
            Node(
                make_training_table,
                ["filtered_videos", f"params:{stage}.dataset"],
                "training_table",
                name="make_training_table",
            ),
            Node(
                report_buckets,
                ["training_table", f"params:{stage}.bucket_config", f"params:{stage}.dataset",
                 f"params:{stage}.seed"],
                ["bucket_report", "bucket_plot", "bucket_metrics"],
                name="report_buckets",
            ),
            Node(
                collect_rejected,
                ["scan_rejected", "shot_rejected", "hash_rejected", "duplicate_rejected",
                 "motion_rejected", "caption_rejected", "quality_rejected", "filter_rejected"],
                ["rejected_videos", "rejection_metrics"],
                name="collect_rejected",
            ),
        ]
    )  # fmt: skip
