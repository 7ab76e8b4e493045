"""End to end: the real Kedro CLI on a fresh copy of the project (env `local`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from opensora_kedro.text.cache import EmbeddingCache
from tests.conftest import PROJECT_ROOT

KEDRO = str(Path(sys.executable).parent / "kedro")
IGNORED = shutil.ignore_patterns(
    ".venv", ".git", "mlflow.db", "mlruns", "build", "__pycache__", "*.egg-info"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with empty data folders and no tracking store."""
    copy = tmp_path_factory.mktemp("project") / "opensora-kedro"
    shutil.copytree(PROJECT_ROOT, copy, ignore=IGNORED)
    for layer in (copy / "data").iterdir():
        for item in layer.iterdir():
            if item.name != ".gitkeep":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    return copy


def _kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run(
        [KEDRO, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_kedro_run_default_pipeline(project):
    short = ("vae_training.max_steps=6,vae_training.ckpt_every=3,vae_training.log_every=2,"
             "diffusion_stage1.max_steps=4,diffusion_stage1.log_every=2,"
             "evaluation.prompt_following.num_unseen_prompts=2,"
             "evaluation.prompt_following.num_seen_prompts=2")  # fmt: skip
    _kedro(project, "run", f"--params={short}")

    captions = pd.read_csv(project / "data/01_raw/captions.csv")
    meta = pd.read_parquet(project / "data/02_intermediate/video_meta.parquet")
    rejected = pd.read_parquet(project / "data/03_primary/rejected_videos.parquet")
    assert len(captions) == 184  # conf/local: 180 clips + 4 stills
    assert len(meta) == 184 and rejected.empty
    assert set(meta["text"]) == set(captions["text"])
    assert meta["num_frames"].min() == 1 and meta["num_frames"].max() == 17  # conf/local
    assert set(meta["fps"].dropna()) <= {12.0, 24.0}

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["demo_data.num_clips"] == "180"  # conf/local over conf/base
    assert run.data.params["demo_data.crf"] == "20"  # conf/base, kept by the soft merge
    assert run.data.params["data_processing.motion.variant"] == "integer"
    assert run.data.params["diffusion_stage1.dataset.fps_max"] == "24.0"  # resolved stage params
    assert run.data.metrics["bucket_metrics.clips"] == 184
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"bucket_report.csv", "bucket_report.png", "vae_reconstructions.png"} <= artifacts
    assert run.data.metrics["vae_metrics.psnr"] > 0
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "vae.loss")
    assert [m.step for m in history] == [2, 4, 6]  # logged by the training job, rank 0
    assert (project / "data/06_models/vae/model.safetensors").is_file()
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "diffusion_stage1.loss")
    assert [m.step for m in history] == [2, 4]
    assert (project / "data/06_models/diffusion_stage1/model.safetensors").is_file()
    # the evaluation closes the chain: its report, pictures and headline metrics
    assert {"evaluation.md", "prompt_following.png", "prompt_following.gif"} <= artifacts
    assert 0 <= run.data.metrics["evaluation_metrics.eval_colour_accuracy"] <= 1
    assert 0 <= run.data.metrics["evaluation_metrics.eval_unseen_colour_accuracy"] <= 1
    assert run.data.metrics["evaluation_metrics.eval_diffusion_eval_loss"] > 0

    table = pd.read_parquet(project / "data/05_model_input/training_table.parquet")
    assert len(table) == 184 and table["score_vmafmotion"].notna().all()
    assert not any(Path(p).is_absolute() for p in table["path"])  # relative to the raw folder
    assert table["text"].str.contains(r" FPS, \d+ motion score\.$|^.* \d+ motion score\.$").all()
    report = pd.read_csv(project / "data/08_reporting/bucket_report.csv")
    assert report["samples"].sum() == 184

    cache = EmbeddingCache.open(project / "data/04_feature/text_embeddings")
    hashes = list(table["caption_hash"])
    assert cache.lookup(hashes, "t5").shape == (184, 32, 64)  # conf/local: max_length 32, d 64
    assert cache.lookup(hashes, "clip").shape == (184, 64)
    assert cache.null("t5").shape == (32, 64)
    assert run.data.metrics["text_embedding_metrics.t5_misses"] >= 1


@pytest.mark.slow
def test_nested_params_override_keeps_siblings(project):
    _kedro(
        project,
        "run",
        "--pipeline=demo_data",
        "--params=demo_data.num_clips=3,demo_data.num_images=0",
    )
    captions = pd.read_csv(project / "data/01_raw/captions.csv")
    assert len(captions) == 3
    assert len(list((project / "data/01_raw/videos").glob("*.mp4"))) == 3  # the old clips are gone


@pytest.mark.slow
def test_viz_build_shows_every_pipeline(project):
    _kedro(project, "viz", "build")
    main = json.loads((project / "build/api/main").read_text())
    pipelines = {pipeline["id"] for pipeline in main["pipelines"]}
    assert {"__default__", "demo_data", "data_processing", "diffusion_stage2_i2v"} <= pipelines
    layers = set(main["layers"])
    assert {"raw", "intermediate", "primary", "model_input", "reporting"} <= layers


@pytest.mark.slow
def test_invalid_params_fail_before_any_node_runs(project):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    args = [KEDRO, "run", "--params=demo_data.crf=99,diffusion_stage1.optim.lr=2"]
    result = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "demo_data.crf = 99" in output and "diffusion_stage1.optim.lr = 2" in output
    assert "Running node" not in output and "Traceback" not in output
