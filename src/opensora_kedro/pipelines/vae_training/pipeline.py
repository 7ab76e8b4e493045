"""``vae_training``: train the autoencoder through the launcher, then evaluate reconstruction."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_vae, train_vae


def create_pipeline(**kwargs) -> Pipeline:
    """The pipeline, for the registry."""
    return Pipeline(
        [
            Node(
                train_vae,
                ["training_table", "params:vae_training", "params:launcher", "vae_run_dir"],
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
