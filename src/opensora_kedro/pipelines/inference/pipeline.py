"""``inference``: prompts (parameters or a CSV) -> videos under ``data/07_model_output``."""

from kedro.pipeline import Node, Pipeline

from opensora_kedro.sampling.inference_job import sample_plan

from .nodes import collect_prompts, generate_videos, settle_inference_params


def create_pipeline(**kwargs) -> Pipeline:
    """The pipeline, for the registry."""
    return Pipeline(
        [
            Node(collect_prompts, "params:inference", "inference_prompts", name="collect_prompts"),
            Node(
                settle_inference_params,
                ["params:inference", "training_table_if_any"],
                "inference_settings",
                name="settle_inference_params",
            ),
            # The plan reaches the job's workers as a file (a hand-over dataset).
            Node(
                sample_plan,
                ["inference_prompts", "inference_settings"],
                "inference_plan",
                name="plan_samples",
            ),
            Node(
                generate_videos,
                ["inference_plan", "inference_settings", "params:launcher", "model_output_dir"],
                "inference_samples",
                name="generate_videos",
            ),
        ]
    )
