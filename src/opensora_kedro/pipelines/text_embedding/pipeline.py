"""``text_embedding``: encoders -> plan (what the cache lacks) -> embed only that.

Incremental by construction: ``text_embeddings_previous`` reads the cache folder that
``text_embeddings`` appends to (Kedro forbids one dataset as a node's input and output),
so a re-run plans nothing for captions already cached and never loads an encoder.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import embed_captions, plan_text_embeddings, prepare_text_encoders


def create_pipeline(**kwargs) -> Pipeline:
    """The pipeline, for the registry."""
    return Pipeline(
        [
            Node(
                prepare_text_encoders,
                ["training_table", "params:text_embedding"],
                "text_encoders",
                name="prepare_text_encoders",
            ),
            Node(
                plan_text_embeddings,
                ["training_table", "text_embeddings_previous", "text_encoders"],
                ["text_embedding_plan", "text_embedding_metrics"],
                name="plan_text_embeddings",
            ),
            Node(
                embed_captions,
                ["text_embedding_plan", "text_encoders", "params:text_embedding"],
                "text_embeddings",
                name="embed_captions",
            ),
        ]
    )
