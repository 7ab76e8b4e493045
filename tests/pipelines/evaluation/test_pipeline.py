"""The ``evaluation`` pipeline on the tiny trained chain."""

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from opensora_kedro.datasets.embedding_cache import EmbeddingCacheDataset
from opensora_kedro.datasets.model_dir import ModelDirDataset
from opensora_kedro.pipelines.evaluation import create_pipeline

OUTPUTS = ["diffusion_eval_loss", "diffusion_eval_summary", "vae_eval_summary",
           "prompt_following", "prompt_following_summary", "prompt_following_sheet",
           "prompt_following_gif", "evaluation_report", "evaluation_metrics"]  # fmt: skip


class Kept(MemoryDataset):
    """Keeps its data after the run (the runner releases intermediate datasets)."""

    def _release(self) -> None:
        pass


def test_evaluation_measures_loss_reconstruction_and_prompt_following(trained_chain):
    root = trained_chain.root
    params = trained_chain.params(
        {
            "evaluation": {
                "prompt_following": {
                    "num_unseen_prompts": 2,
                    "num_seen_prompts": 1,
                    "sampling": {"num_steps": 2},
                }
            },
            "vae_training": {"eval": {"holdout_fraction": 0.3}},
        }  # fmt: skip
    )
    datasets = {name: Kept() for name in OUTPUTS}
    datasets.update({
        "diffusion_stage1.model": ModelDirDataset(str(root / "diffusion_stage1")),
        "vae_model": ModelDirDataset(str(root / "vae")),
        "text_embeddings": EmbeddingCacheDataset(str(root / "text_embeddings")),
        "training_table": MemoryDataset(trained_chain.table),
    })  # fmt: skip
    for group in ("diffusion_stage1", "evaluation", "inference", "vae_training"):
        datasets[f"params:{group}"] = MemoryDataset(params[group])
    SequentialRunner().run(create_pipeline(), DataCatalog(datasets))
    out = datasets

    loss = out["diffusion_eval_loss"].load()
    assert set(loss["t"].round(4)) == {round(i / 11, 4) for i in range(1, 11)}
    assert (loss["loss"] > 0).all()
    following = out["prompt_following"].load()
    assert len(following) == 3 and following["parsed"].all()
    assert following["seen"].tolist() == [False, False, True]
    assert not set(following["prompt"]) & set(trained_chain.table["text"])
    metrics = out["evaluation_metrics"].load()
    for name in ("eval_colour_accuracy", "eval_direction_accuracy",
                 "eval_unseen_colour_accuracy", "eval_seen_direction_accuracy"):  # fmt: skip
        assert 0.0 <= metrics[name]["value"] <= 1.0
    assert metrics["eval_diffusion_eval_loss"]["value"] > 0
    report = out["evaluation_report"].load()
    assert "| unseen combinations | 2 |" in report and "| chance |" in report
    assert "Diffusion loss per bucket" in report
    assert out["prompt_following_gif"].load()[:6] == b"GIF89a"
    assert out["prompt_following_sheet"].load().size[0] > 100
