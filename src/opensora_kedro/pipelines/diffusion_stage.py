"""One modular pipeline for every diffusion stage, instantiated per stage under its namespace.

Each stage hands its training rows (the held-out clips left out) to its job as
``<stage>.job_table``, trains through the launcher from its parent stage's exported model (when
the parent has been trained) and exports its own; a stage's datasets are ``<stage>.job_table``,
``<stage>.run_dir`` and ``<stage>.model`` (catalog factories), its parameters
``params:<stage>``.
"""

from __future__ import annotations

import logging
from functools import partial, update_wrapper

import pandas as pd
from kedro.pipeline import Node, Pipeline

from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.data.holdout import split_holdout
from opensora_kedro.runtime.launcher import launch, make_job_spec
from opensora_kedro.runtime.params import LauncherParams
from opensora_kedro.text.cache import EmbeddingCache
from opensora_kedro.training import diffusion_job

logger = logging.getLogger(__name__)

# Stage -> the stage whose trained model it starts from (Open-Sora's training order).
PARENTS = {
    "diffusion_image": None,
    "diffusion_stage1": "diffusion_image",
    "diffusion_stage2": "diffusion_stage1",
    "diffusion_stage1_i2v": "diffusion_stage1",
    "diffusion_stage2_i2v": "diffusion_stage2",
    "diffusion_finetune": None,  # starts from model.from_pretrained (e.g. released weights)
}


def training_rows(table: pd.DataFrame, params: DiffusionStageParams) -> pd.DataFrame:
    """The rows the stage trains on, for ``<stage>.job_table``: the clips the evaluation
    pipeline measures the loss on (``eval.holdout_fraction``) are never trained on."""
    train, _ = split_holdout(table, params.eval.holdout_fraction)
    return train


def train_stage(
    job_table: str,
    text: EmbeddingCache,
    vae_model: str,
    params: DiffusionStageParams,
    launcher: LauncherParams,
    run_dir: str,
    parent_model: str | None = None,
    *,
    stage: str,
) -> dict:
    """Train one stage on the rows of ``job_table`` (a file) through the launcher, from its
    parent's model when there is one; resumes from ``run_dir``'s checkpoints. Returns the
    export for ``<stage>.model``."""
    inputs = {"training_table": job_table, "text_embeddings": str(text.root),
              "vae_model": vae_model}  # fmt: skip
    if parent_model:
        inputs["parent_model"] = parent_model
    else:
        logger.info("%s: no trained parent stage; training from scratch", stage)
    spec = make_job_spec(diffusion_job.run, params, run_dir, inputs=inputs, name=stage)
    result = launch(spec, launcher)
    logger.info(
        "%s: %d updates, last checkpoint %s", stage, result["update_steps"], result["checkpoint"]
    )
    # An unmerged LoRA export is the base weights plus their adapter folder (lora/). The model
    # parameters go to config.json (ModelDirDataset): their JSON form, at this one boundary.
    return {"weights": f"{result['export']}/model.safetensors",
            "config": params.model.model_dump(mode="json"), "lora": result.get("lora")}  # fmt: skip


def stage_pipeline(stage: str) -> Pipeline:
    """``stage``'s training as a namespaced instance of the one stage pipeline."""
    parent = PARENTS[stage]
    inputs = {
        "job_table": "job_table", "text": "text_embeddings", "vae_model": "vae_model",
        "params": "params:stage", "launcher": "params:launcher", "run_dir": "run_dir",
    }  # fmt: skip
    if parent:
        inputs["parent_model"] = "parent_model"
    train = update_wrapper(partial(train_stage, stage=stage), train_stage)
    template = Pipeline(
        [
            # The training rows reach the job's workers as a file (a hand-over dataset).
            Node(training_rows, ["training_table", "params:stage"], "job_table", name="hand_over"),
            Node(train, inputs, "model", name="train"),
        ]
    )
    shared = {name: name for name in ("training_table", "text_embeddings", "vae_model")}
    if parent:
        shared["parent_model"] = f"{parent}.model"
    return Pipeline(
        template,
        namespace=stage,
        inputs=shared,
        parameters={"params:stage": f"params:{stage}", "params:launcher": "params:launcher"},
    )
