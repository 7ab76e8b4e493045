"""``evaluation``: how good is the trained chain (the VAE and ``diffusion_stage1``)?"""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    evaluate_diffusion_loss,
    evaluate_prompt_following,
    evaluate_vae_reconstruction,
    write_report,
)

# The stage whose model is evaluated: the last stage of the embedded default.
STAGE = "diffusion_stage1"


def create_pipeline(**kwargs) -> Pipeline:
    """The pipeline, for the registry."""
    return Pipeline(
        [
            Node(
                evaluate_diffusion_loss,
                [
                    f"{STAGE}.model",
                    "vae_model",
                    "text_embeddings",
                    "training_table",
                    f"params:{STAGE}",
                    "params:evaluation",
                ],  # fmt: skip
                ["diffusion_eval_loss", "diffusion_eval_summary"],
                name="evaluate_diffusion_loss",
            ),
            Node(
                evaluate_vae_reconstruction,
                ["vae_model", "training_table", "params:vae_training"],
                "vae_eval_summary",
                name="evaluate_vae_reconstruction",
            ),
            Node(
                evaluate_prompt_following,
                [
                    f"{STAGE}.model",
                    "vae_model",
                    "training_table",
                    "params:evaluation",
                    "params:inference",
                ],  # fmt: skip
                [
                    "prompt_following",
                    "prompt_following_summary",
                    "prompt_following_sheet",
                    "prompt_following_gif",
                ],  # fmt: skip
                name="evaluate_prompt_following",
            ),
            Node(
                write_report,
                [
                    "diffusion_eval_summary",
                    "vae_eval_summary",
                    "prompt_following_summary",
                    "prompt_following",
                ],  # fmt: skip
                ["evaluation_report", "evaluation_metrics"],
                name="write_report",
            ),
        ]
    )
