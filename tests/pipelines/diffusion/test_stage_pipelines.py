"""Diffusion stages end to end on a few tiny clips: image -> stage1 -> stage1_i2v, in-process."""

import pandas as pd
import torch
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from safetensors.torch import load_file

from opensora_kedro.data.holdout import split_holdout
from opensora_kedro.pipelines.diffusion_stage import stage_pipeline
from opensora_kedro.training.diffusion_job import DiffusionTask
from tests.pipelines.conftest import STAGES


def test_stages_chain_from_their_parents(trained_chain):
    root = trained_chain.root
    # image and stage1 are trained by the fixture; stage1_i2v starts from stage1's export
    SequentialRunner().run(
        stage_pipeline(STAGES[2]), DataCatalog(trained_chain.stage_datasets(STAGES))
    )
    weights = {stage: load_file(str(root / stage / "model.safetensors")) for stage in STAGES}
    assert all(len(w) > 10 for w in weights.values())
    # the i2v stage has a conditioning input that stage1 lacks
    assert any(k.startswith("cond_in") for k in weights["diffusion_stage1_i2v"])
    assert not any(k.startswith("cond_in") for k in weights["diffusion_stage1"])
    checkpoints = {p.name for p in (root / "diffusion_stage1_training" / "checkpoints").iterdir()}
    assert "step-00000002" in checkpoints


def test_stage_training_never_sees_the_held_out_clips(trained_chain):
    # what the stage's hand-over node gave its job to train on
    trained = trained_chain.job_table("diffusion_stage1")
    paths = set(pd.read_parquet(trained)["path"])
    _, held = split_holdout(trained_chain.table, 0.3)
    assert len(held) > 0 and not paths & set(held["path"])


def test_stage_pipelines_are_namespaced_instances():
    pipeline = stage_pipeline("diffusion_stage2_i2v")
    assert pipeline.inputs() == {
        "training_table", "text_embeddings", "vae_model", "diffusion_stage2.model",
        "params:diffusion_stage2_i2v", "params:launcher", "diffusion_stage2_i2v.run_dir",
    }  # fmt: skip
    assert pipeline.outputs() == {"diffusion_stage2_i2v.model"}
    # the training rows reach the job through the stage's hand-over dataset
    assert "diffusion_stage2_i2v.job_table" in pipeline.all_outputs()
    assert stage_pipeline("diffusion_image").inputs() >= {"params:diffusion_image"}


def test_caption_dropout_uses_the_cached_null_embeddings(chain):
    root, table, params = chain.root, chain.table, chain.params()
    paths = {"text_embeddings": str(root / "text_embeddings"), "vae_model": str(root / "vae")}
    always = params["diffusion_stage1"].model_copy(
        update={"dropout_ratio": {"t5": 1.0, "clip": 1.0}}
    )
    task = DiffusionTask(always, table, paths)
    t5, clip = task._text([0, 1], torch.device("cpu"))
    assert torch.equal(t5[1], task.text.null("t5")) and torch.equal(clip[0], task.text.null("clip"))
    never = always.model_copy(update={"dropout_ratio": {"t5": 0.0, "clip": 0.0}})
    never = DiffusionTask(never, table, paths)
    t5, _ = never._text([0], torch.device("cpu"))
    assert torch.equal(t5[0], task.text.lookup([table.loc[0, "caption_hash"]], "t5")[0])


def _epoch(task, model, data, epoch: int) -> list[float]:
    from torch.utils.data import DataLoader

    dataset, sampler, collate = data
    sampler.set_epoch(epoch)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    return [float(task.loss(model, batch)[0].detach()) for batch in loader]


def test_cached_latents_train_like_encoding_and_hit_from_the_second_epoch(chain, tmp_path):
    root, table = chain.root, chain.table
    paths = {"text_embeddings": str(root / "text_embeddings"), "vae_model": str(root / "vae")}
    stage = chain.params()["diffusion_image"].model_copy(
        # every clip, every epoch
        update={"log_every": 1, "bucket_config": {"96px": {1: (1.0, 1), 9: (1.0, 1)}}}
    )
    cached = stage.model_copy(update={"dataset": stage.dataset.model_copy(
        update={"type": "cached_video_text", "latent_cache_dir": str(tmp_path)}
    )})  # fmt: skip
    plain = stage.model_copy(
        update={"dataset": stage.dataset.model_copy(update={"type": "video_text"})}
    )
    losses = {}
    for name, stage_params in (("plain", plain), ("cached", cached)):
        task = DiffusionTask(stage_params, table, paths)
        torch.manual_seed(0)
        model, data = task.build_model(), task.build_data(0, 1)
        losses[name] = _epoch(task, model, data, epoch=0)
    # Epoch 0 misses everything and draws its samples from the same RNG stream as encode.
    assert losses["cached"] == losses["plain"] and len(losses["cached"]) == len(table)
    assert task.cache_counts == {"hits": 0, "misses": len(table), "batches": len(table)}
    _epoch(task, model, data, epoch=1)
    assert task.cache_counts["hits"] == len(table) and task.cache_counts["misses"] == len(table)
