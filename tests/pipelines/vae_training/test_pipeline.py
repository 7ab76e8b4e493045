"""The vae_training pipeline on a few tiny demo clips: train (in-process), export, evaluate."""

import json
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from opensora_kedro.config.schemas.vae import VaeTrainingParams
from opensora_kedro.data.holdout import split_holdout
from opensora_kedro.datasets.handover import HandoverTableDataset
from opensora_kedro.datasets.model_dir import ModelDirDataset
from opensora_kedro.datasets.run_dir import RunDirectoryDataset
from opensora_kedro.evaluation.vae import evaluate_reconstruction
from opensora_kedro.models.vae.loading import load_exported_autoencoder
from opensora_kedro.pipelines.vae_training import create_pipeline
from opensora_kedro.runtime.params import LauncherParams
from opensora_kedro.training.vae_job import latent_statistics
from tests.conftest import demo_training_table

DEMO = {"num_clips": 8, "num_images": 0, "sizes": [[64, 64]], "fps": [24], "lengths": [9, 13],
        "seed": 1, "crf": 18}  # fmt: skip


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return demo_training_table(root, DEMO)


def _params(**overrides):
    raw = {
        "model": {"type": "tiny_vae"},
        "dataset": {"fps_max": 24},
        "bucket_config": {"64px": {1: [1.0, 2], 9: [1.0, 2]}},
        "optim": {"cls": "AdamW", "lr": 1e-3, "eps": 1e-8, "betas": [0.9, 0.98]},
        "lr_scheduler": {"warmup_steps": 0},
        "plugin": "ddp", "plugin_config": {}, "dtype": "fp32", "num_workers": 0,
        "max_steps": 3, "log_every": 1, "ckpt_every": 2, "keep_n_latest": 2, "seed": 0,
        "vae_loss_config": {"perceptual_loss_weight": 0.0, "kl_loss_weight": 1e-6},
        "eval": {"holdout_fraction": 0.3, "max_clips": 2, "images": 1},
    }  # fmt: skip
    return VaeTrainingParams.model_validate({**raw, **overrides})


def _catalog(tmp_path, table, params):
    return DataCatalog(
        {
            "training_table": MemoryDataset(table),
            "params:vae_training": MemoryDataset(params),
            "params:launcher": MemoryDataset(LauncherParams(type="inprocess")),
            "vae_job_table": HandoverTableDataset(str(tmp_path / "job_table.parquet")),
            "vae_run_dir": RunDirectoryDataset(str(tmp_path / "run")),
            "vae_model": ModelDirDataset(str(tmp_path / "vae")),
        }
    )


def test_trains_exports_and_evaluates(tmp_path, table):
    catalog = _catalog(tmp_path, table, _params())
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    assert (tmp_path / "vae" / "model.safetensors").is_file()
    exported = json.loads((tmp_path / "vae" / "config.json").read_text())["config"]
    assert exported["scaling_factor"] > 0 and exported["scaling_factor"] != 1.0
    # the export's scale and shift are the training clips' latent statistics
    vae = load_exported_autoencoder(tmp_path / "vae")
    train, _ = split_holdout(table, 0.3)
    # the job trained on exactly the training split, handed over as a file
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "job_table.parquet"), train)
    stats = latent_statistics(vae, train, _params(), max_clips=32)
    assert stats["mean"] == pytest.approx(exported["shift_factor"], abs=1e-5)
    assert stats["std"] == pytest.approx(1 / exported["scaling_factor"], rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00000002", "step-00000003",
    ]  # fmt: skip
    metrics = outputs["vae_metrics"].load()
    assert metrics["psnr"]["value"] > 0 and 0 < metrics["ssim"]["value"] <= 1
    assert (
        0 <= metrics["colour_kept"]["value"] <= 1 and 0 <= metrics["direction_kept"]["value"] <= 1
    )
    assert outputs["vae_reconstructions"].load().axes
    # Reconstructed as trained: a VAE trained on posterior means is evaluated on them.
    model_dir = str(tmp_path / "vae")
    means, _ = evaluate_reconstruction(model_dir, table, _params(sample_posterior=False))
    again, _ = evaluate_reconstruction(model_dir, table, _params(sample_posterior=False))
    sampled, _ = evaluate_reconstruction(model_dir, table, _params(sample_posterior=True))
    assert means == again and means["psnr"] != sampled["psnr"]

    # A longer run in the same folder resumes from step 3 instead of starting again.
    SequentialRunner().run(create_pipeline(), _catalog(tmp_path, table, _params(max_steps=4)))
    assert "step-00000004" in {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()}


def test_no_held_out_clip_is_a_clear_error(tmp_path, table):
    catalog = _catalog(tmp_path, table, _params(eval={"holdout_fraction": 0.0}))
    with pytest.raises(Exception, match="holdout_fraction"):
        SequentialRunner().run(create_pipeline(), catalog)


def test_training_split_excludes_held_out_clips(table):
    train, held = split_holdout(table, 0.3)
    assert len(train) + len(held) == len(table) and not set(train["path"]) & set(held["path"])
    again, _ = split_holdout(table.iloc[::-1], 0.3)
    assert set(again["path"]) == set(train["path"])  # by path hash, not by position
    moved = table.assign(path=table["path"].map(lambda p: "/elsewhere/" + Path(p).name))
    _, moved_held = split_holdout(moved, 0.3)
    assert {Path(p).name for p in moved_held["path"]} == {Path(p).name for p in held["path"]}
    assert isinstance(train, pd.DataFrame)
    with pytest.raises(ValueError, match="keeps every one"):
        split_holdout(table.head(1), 0.999999)


def test_reconstructions_are_sampled_during_training(tmp_path, table):
    params = _params(samples={"every": 2, "count": 2})
    SequentialRunner().run(create_pipeline(), _catalog(tmp_path, table, params))
    folder = tmp_path / "run" / "samples" / "step-00000002"
    names = {p.name for p in folder.iterdir()}
    assert {"samples.gif", "samples.png", "labels.txt"} <= names and "sample-0.mp4" in names
    assert "original | reconstruction" in (folder / "labels.txt").read_text()
