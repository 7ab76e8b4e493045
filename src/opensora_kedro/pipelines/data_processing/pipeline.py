"""``data_processing``: scan -> frame hashes -> drop near-duplicates -> motion score -> filter
-> training captions -> bucket report."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    collect_rejected,
    drop_duplicates,
    filter_videos,
    hash_clips,
    make_training_table,
    report_buckets,
    scan_videos,
    score_videos,
)


def create_pipeline(stage: str = "diffusion_stage1", **kwargs) -> Pipeline:
    """``stage`` is the training stage whose dataset settings and buckets the table is for."""
    return Pipeline(
        [
            Node(
                scan_videos,
                [
                    "raw_videos",
                    "raw_captions",
                    "video_meta_previous",
                    "params:data_processing.scan",
                ],
                ["video_meta", "scan_rejected"],
                name="scan_videos",
            ),
            Node(
                hash_clips,
                ["video_meta", "video_hashes_previous", "params:data_processing.dedup"],
                ["video_hashes", "hash_rejected"],
                name="hash_clips",
            ),
            Node(
                drop_duplicates,
                ["video_meta", "video_hashes", "params:data_processing.dedup"],
                ["unique_videos", "duplicate_rejected"],
                name="drop_duplicates",
            ),
            Node(
                score_videos,
                ["unique_videos", "motion_scores_previous", "params:data_processing.motion"],
                ["motion_scores", "motion_rejected"],
                name="score_motion",
            ),
            Node(
                filter_videos,
                ["unique_videos", "motion_scores", "params:data_processing.filter"],
                ["filtered_videos", "filter_rejected"],
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
                [
                    "training_table",
                    f"params:{stage}.bucket_config",
                    f"params:{stage}.dataset",
                    f"params:{stage}.seed",
                ],
                ["bucket_report", "bucket_plot", "bucket_metrics"],
                name="report_buckets",
            ),  # fmt: skip
            Node(
                collect_rejected,
                [
                    "scan_rejected",
                    "hash_rejected",
                    "duplicate_rejected",
                    "motion_rejected",
                    "filter_rejected",
                ],  # fmt: skip
                ["rejected_videos", "rejection_metrics"],
                name="collect_rejected",
            ),
        ]
    )
