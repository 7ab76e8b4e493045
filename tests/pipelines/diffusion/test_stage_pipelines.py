"""Diffusion stages end to end on a few tiny clips: image -> stage1 -> stage1_i2v, in-process."""

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from safetensors.torch import load_file

from opensora_kedro.config.hardware import Hardware
from opensora_kedro.config.resolve import resolve_parameters
from opensora_kedro.datasets.embedding_cache import EmbeddingCacheDataset
from opensora_kedro.datasets.model_dir import ModelDirDataset
from opensora_kedro.datasets.run_dir import RunDirectoryDataset
from opensora_kedro.models.vae.registry import build_vae, save_vae_weights
from opensora_kedro.pipelines.diffusion_stage import stage_pipeline
from opensora_kedro.pipelines.text_embedding import create_pipeline as text_pipeline
from tests.config.conftest import project_layers
from tests.conftest import demo_training_table

DEMO = {"num_clips": 6, "num_images": 2, "sizes": [[96, 96]], "fps": [24], "lengths": [9, 17],
        "seed": 2, "crf": 18}  # fmt: skip
STAGES = ["diffusion_image", "diffusion_stage1", "diffusion_stage1_i2v"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion")
    table = demo_training_table(root, DEMO)
    overrides = {"text_embedding": {"t5": {"from_pretrained": str(root / "t5")},
                                    "clip": {"from_pretrained": str(root / "clip")}}}  # fmt: skip
    for stage in STAGES:
        overrides[stage] = {"max_steps": 2, "ckpt_every": 2, "log_every": 1,
                            "bucket_config": {"_delete_": True, "96px": {1: [1.0, 2], 9: [1.0, 2]}}}  # fmt: skip
    cpu = Hardware(gpu_count=0, gpu_memory_gib=0.0, bf16=False)
    params = resolve_parameters(project_layers("local", overrides), cpu).params
    text = EmbeddingCacheDataset(str(root / "text_embeddings"))
    SequentialRunner().run(
        text_pipeline(),
        DataCatalog({"training_table": MemoryDataset(table), "text_embeddings": text,
                     "text_embeddings_previous": EmbeddingCacheDataset(str(root / "text_embeddings")),
                     "params:text_embedding": MemoryDataset(params["text_embedding"])}),
    )  # fmt: skip
    vae = ModelDirDataset(str(root / "vae"))
    save_vae_weights(build_vae("tiny_vae"), root / "vae_export")
    vae.save({"weights": str(root / "vae_export" / "model.safetensors"),
              "config": {"type": "tiny_vae", "config": {}}})  # fmt: skip
    return root, table, params


def test_stages_chain_from_their_parents(inputs):
    root, table, params = inputs
    datasets = {
        "training_table": MemoryDataset(table),
        "text_embeddings": EmbeddingCacheDataset(str(root / "text_embeddings")),
        "vae_model": ModelDirDataset(str(root / "vae")),
        "params:launcher": MemoryDataset({"type": "inprocess"}),
    }
    for stage in STAGES:
        datasets[f"params:{stage}"] = MemoryDataset(params[stage])
        datasets[f"{stage}.run_dir"] = RunDirectoryDataset(str(root / f"{stage}_training"))
        datasets[f"{stage}.model"] = ModelDirDataset(str(root / stage), optional=True)
    pipeline = sum((stage_pipeline(stage) for stage in STAGES[1:]), stage_pipeline(STAGES[0]))
    SequentialRunner().run(pipeline, DataCatalog(datasets))
    weights = {stage: load_file(str(root / stage / "model.safetensors")) for stage in STAGES}
    assert all(len(w) > 10 for w in weights.values())
    # the i2v stage has a conditioning input that stage1 lacks
    assert any(k.startswith("cond_in") for k in weights["diffusion_stage1_i2v"])
    assert not any(k.startswith("cond_in") for k in weights["diffusion_stage1"])
    checkpoints = {p.name for p in (root / "diffusion_stage1_training" / "checkpoints").iterdir()}
    assert "step-00000002" in checkpoints


def test_stage_pipelines_are_namespaced_instances():
    pipeline = stage_pipeline("diffusion_stage2_i2v")
    assert pipeline.inputs() == {
        "training_table", "text_embeddings", "vae_model", "diffusion_stage2.model",
        "params:diffusion_stage2_i2v", "params:launcher", "diffusion_stage2_i2v.run_dir",
    }  # fmt: skip
    assert pipeline.outputs() == {"diffusion_stage2_i2v.model"}
    assert stage_pipeline("diffusion_image").inputs() >= {"params:diffusion_image"}


def test_caption_dropout_uses_the_cached_null_embeddings(inputs):
    import torch

    from opensora_kedro.training.diffusion_job import DiffusionTask

    root, table, params = inputs
    paths = {"text_embeddings": str(root / "text_embeddings"), "vae_model": str(root / "vae")}
    always = {**params["diffusion_stage1"], "dropout_ratio": {"t5": 1.0, "clip": 1.0}}
    task = DiffusionTask(always, table, paths)
    t5, clip = task._text([0, 1], torch.device("cpu"))
    assert torch.equal(t5[1], task.text.null("t5")) and torch.equal(clip[0], task.text.null("clip"))
    never = DiffusionTask({**always, "dropout_ratio": {"t5": 0.0, "clip": 0.0}}, table, paths)
    t5, _ = never._text([0], torch.device("cpu"))
    assert torch.equal(t5[0], task.text.lookup([table.loc[0, "caption_hash"]], "t5")[0])
