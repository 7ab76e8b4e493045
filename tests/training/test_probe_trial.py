"""The GPU probe's pieces that run on a CPU: a stage's token geometry, and its training step
on random latents of a bucket's shape through the real Trainer."""

import math

import pytest
import torch

from opensora_kedro.config.resolve import resolve_parameters
from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.runtime.distributed import process_group
from opensora_kedro.runtime.tracking import MetricsLogger
from opensora_kedro.training.batch_probe import probe_buckets
from opensora_kedro.training.loop import Trainer
from opensora_kedro.training.probe_trial import RandomLatentTask, stage_geometry
from tests.config.conftest import CPU, project_layers


def stage(env: str, name: str, params: dict | None = None) -> DiffusionStageParams:
    layers = project_layers(env, params)
    return resolve_parameters(layers, hardware=CPU).models[name]


def test_open_sora_stage1_geometry_is_the_hunyuan_vae_and_t5():
    geometry = stage_geometry(stage("base", "diffusion_stage1"))
    assert (geometry.spatial, geometry.temporal, geometry.causal) == (8, 4, True)
    assert (geometry.patch, geometry.channels, geometry.text_tokens) == (2, 16, 512)
    assert geometry.latent_frames(129) == 33


def test_a_mismatched_model_width_is_reported():
    params = stage("base", "diffusion_stage1", {"diffusion_stage1": {"model": {"in_channels": 32}}})
    with pytest.raises(ValueError, match="in_channels 32"):
        stage_geometry(params)


def test_one_training_step_per_bucket_shape_on_the_stage_model(tmp_path):
    # cond_embed: the i2v stages' extra input is fed too
    params = stage("gpu", "diffusion_stage1", {"diffusion_stage1": {"model": {"cond_embed": True}}})
    # A CPU runs the stage as conf/local does: no ZeRO, no HybridAdam kernel, fp32.
    params = params.model_copy(
        update={"plugin": "ddp", "dtype": "fp32", "max_steps": None, "compile": False}
    )
    buckets = probe_buckets(params.bucket_config, stage_geometry(params))
    with process_group():
        trainer = Trainer(
            RandomLatentTask(params), params, tmp_path,
            MetricsLogger(None, None, "", enabled=False),
        )  # fmt: skip
        before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
        for bucket in buckets:
            loss = trainer.train_step(
                {"shape": (2, *bucket.latent_shape), "device": trainer.device}
            )
            assert math.isfinite(loss)
    assert trainer.running.update_step == len(buckets)
    after = trainer.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the optimizer stepped
    assert trainer.ema is not None  # conf/gpu keeps an EMA: the probe counts its memory too
