"""``demo_data``: captioned synthetic clips for the embedded default."""

from kedro.pipeline import Node, Pipeline

from .nodes import plan_clips, render_clips


def create_pipeline(**kwargs) -> Pipeline:
    """The pipeline, for the registry."""
    return Pipeline(
        [
            Node(plan_clips, "params:demo_data", "demo_clip_specs", name="plan_demo_clips"),
            Node(
                render_clips,
                ["demo_clip_specs", "params:demo_data.crf"],
                ["raw_videos", "raw_captions"],
                name="render_demo_clips",
            ),
        ]
    )
