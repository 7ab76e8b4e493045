"""``vae_training``: hand the training rows over, train the autoencoder through the launcher,
then evaluate reconstruction."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_vae, train_vae, vae_training_rows


def create_pipeline(**kwargs) -> Pipeline:
    """The pipeline, for the registry."""
    return Pipeline(
        [
            Node(
                vae_training_rows,
                ["training_table", "params:vae_training"],
                "vae_job_table",
                name="hand_over_vae_table",
            ),
            Node(
                train_vae,
                ["vae_job_table", "params:vae_training", "params:launcher", "vae_run_dir"],
                "vae_model",
                name="train_vae",
            ),
            Node(
                evaluate_vae,
                ["vae_model", "training_table", "params:vae_training"],
                ["vae_metrics", "vae_reconstructions"],
                name="evaluate_vae",
            ),
        ]
    )
