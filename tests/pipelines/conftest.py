"""A tiny trained chain shared by the diffusion, inference and evaluation pipeline tests:
demo clips, their text embeddings, a (random) tiny VAE export, and diffusion_image and
diffusion_stage1 trained for two steps, in-process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from opensora_kedro.config.hardware import Hardware
from opensora_kedro.config.resolve import resolve_parameters
from opensora_kedro.datasets.embedding_cache import EmbeddingCacheDataset
from opensora_kedro.datasets.handover import HandoverTableDataset
from opensora_kedro.datasets.model_dir import ModelDirDataset
from opensora_kedro.datasets.run_dir import RunDirectoryDataset
from opensora_kedro.models.vae.registry import build_vae, save_vae_weights
from opensora_kedro.pipelines.diffusion_stage import stage_pipeline
from opensora_kedro.pipelines.text_embedding import create_pipeline as text_pipeline
from opensora_kedro.runtime.params import LauncherParams
from tests.config.conftest import project_layers
from tests.conftest import demo_training_table

DEMO = {"num_clips": 6, "num_images": 2, "sizes": [[96, 96]], "fps": [24], "lengths": [9, 17],
        "seed": 2, "crf": 18}  # fmt: skip
STAGES = ["diffusion_image", "diffusion_stage1", "diffusion_stage1_i2v"]
CPU = Hardware(gpu_count=0, gpu_memory_gib=0.0, bf16=False)
INPROCESS = LauncherParams(type="inprocess")


@dataclass
class Chain:
    """Where the tiny chain lives, its training table and its resolved local parameters."""

    root: Path
    table: pd.DataFrame
    overrides: dict

    def params(self, extra: dict | None = None) -> dict:
        """env local's parameters with the chain's paths (and ``extra``) applied, as the typed
        models nodes receive, by group."""
        layers = project_layers("local", _merge(self.overrides, extra or {}))
        return resolve_parameters(layers, CPU).models

    def job_table(self, stage: str) -> Path:
        """Where ``<stage>.job_table`` hands the stage's training rows to its job."""
        return self.root / "job_tables" / f"{stage}.parquet"

    def stage_datasets(self, stages: list[str]) -> dict:
        """Catalog entries of the stages' hand-over tables, run folders and models, plus the
        shared inputs."""
        params = self.params()
        datasets = {
            "training_table": MemoryDataset(self.table),
            "text_embeddings": EmbeddingCacheDataset(str(self.root / "text_embeddings")),
            "vae_model": ModelDirDataset(str(self.root / "vae")),
            "params:launcher": MemoryDataset(INPROCESS),
        }
        for stage in stages:
            datasets[f"params:{stage}"] = MemoryDataset(params[stage])
            datasets[f"{stage}.job_table"] = HandoverTableDataset(str(self.job_table(stage)))
            datasets[f"{stage}.run_dir"] = RunDirectoryDataset(str(self.root / f"{stage}_training"))
            datasets[f"{stage}.model"] = ModelDirDataset(str(self.root / stage), optional=True)
        return datasets


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _overrides(root: Path) -> dict:
    encoders = {"t5": {"from_pretrained": str(root / "t5")},
                "clip": {"from_pretrained": str(root / "clip")}}  # fmt: skip
    overrides: dict = {"text_embedding": encoders}
    for stage in STAGES:
        overrides[stage] = {"max_steps": 2, "ckpt_every": 2, "log_every": 1,
                            "eval": {"holdout_fraction": 0.3},
                            # conf/local's VAE and latent cache paths are the project's: use tmp
                            "ae": {"from_pretrained": str(root / "vae")},
                            "dataset": {"latent_cache_dir": str(root / "latents")},
                            "bucket_config": {"_delete_": True, "96px": {1: [1.0, 2], 9: [1.0, 2]}}}  # fmt: skip
    models = {"model": {"from_pretrained": str(root / "diffusion_stage1")},
              "ae": {"from_pretrained": str(root / "vae")}, **encoders}  # fmt: skip
    overrides["inference_256px"] = models
    overrides["inference_t2i2v_256px"] = {
        "img_flux": {"from_pretrained": str(root / "diffusion_image")},
        "img_flux_ae": {"from_pretrained": str(root / "vae")},
    }
    return overrides


@pytest.fixture(scope="session")
def chain(tmp_path_factory) -> Chain:
    """Text embeddings and a VAE export for the demo clips; no stage trained yet."""
    root = tmp_path_factory.mktemp("chain")
    table = demo_training_table(root, DEMO)
    chain = Chain(root, table, _overrides(root))
    params = chain.params()
    text = EmbeddingCacheDataset(str(root / "text_embeddings"))
    SequentialRunner().run(
        text_pipeline(),
        DataCatalog({"training_table": MemoryDataset(table), "text_embeddings": text,
                     "text_embeddings_previous": EmbeddingCacheDataset(str(root / "text_embeddings")),
                     "params:text_embedding": MemoryDataset(params["text_embedding"])}),
    )  # fmt: skip
    vae = params["vae_training"].model  # conf/local's VAE, randomly initialised
    save_vae_weights(build_vae(vae.type, **vae.config), root / "vae_export")
    export = {"weights": str(root / "vae_export" / "model.safetensors"),
              "config": {"type": vae.type, "config": vae.config}}  # fmt: skip
    ModelDirDataset(str(root / "vae")).save(export)
    return chain


@pytest.fixture(scope="session")
def trained_chain(chain: Chain) -> Chain:
    """The chain with diffusion_image and diffusion_stage1 trained (two steps each)."""
    stages = STAGES[:2]
    pipeline = stage_pipeline(stages[0]) + stage_pipeline(stages[1])
    SequentialRunner().run(pipeline, DataCatalog(chain.stage_datasets(stages)))
    return chain
