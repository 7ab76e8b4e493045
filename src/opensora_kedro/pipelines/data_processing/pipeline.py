"""``data_processing``: scan the raw videos into Open-Sora's video table."""

from kedro.pipeline import Node, Pipeline

from .nodes import scan_videos


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                scan_videos,
                ["raw_videos", "raw_captions", "params:data_processing.scan"],
                ["video_meta", "rejected_videos", "scan_metrics"],
                name="scan_videos",
            ),
        ]
    )
