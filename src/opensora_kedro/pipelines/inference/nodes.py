"""Nodes of the ``inference`` pipeline: gather the prompts, plan the samples, generate through
the launcher."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd

from opensora_kedro.config.schemas.inference import InferenceParams
from opensora_kedro.runtime.launcher import launch, make_job_spec
from opensora_kedro.runtime.params import LauncherParams
from opensora_kedro.sampling import inference_job
from opensora_kedro.sampling.inference_job import SAMPLE_COLUMNS
from opensora_kedro.sampling.prompts import resolve_motion_score

logger = logging.getLogger(__name__)


def collect_prompts(params: InferenceParams) -> pd.DataFrame:
    """The prompts to generate: ``prompt`` (with ``ref``), or the rows ``start_index`` to
    ``end_index`` of ``prompt_csv`` (column ``text``, optional ``ref``). The config layer
    never lets both through (it keeps the one given with --params)."""
    if params.prompt:
        return pd.DataFrame({"text": [params.prompt], "ref": [params.ref]})
    if not params.prompt_csv:
        raise ValueError(
            'nothing to generate: set inference.prompt (--params "inference.prompt=a red circle '
            'moving left") or inference.prompt_csv (a CSV with a text column)'
        )
    table = pd.read_csv(params.prompt_csv)
    if "text" not in table.columns:
        raise ValueError(f"{params.prompt_csv} has no 'text' column (found {list(table)})")
    if "ref" not in table.columns:
        table["ref"] = None
    rows = table.iloc[params.start_index or 0 : params.end_index]
    if rows.empty:
        raise ValueError(f"no prompts in {params.prompt_csv} between start and end index")
    return rows[["text", "ref"]]


def settle_inference_params(
    params: InferenceParams, training_table: pd.DataFrame
) -> InferenceParams:
    """The inference parameters with ``motion_score: auto`` read from the training table (an
    empty table when there is none)."""
    score = resolve_motion_score(params.motion_score, training_table)
    return params.model_copy(update={"motion_score": score})


def generate_videos(
    plan: str, params: InferenceParams, launcher: LauncherParams, output_root: str
) -> pd.DataFrame:
    """Generate every row of the sample plan (the file ``plan``) through the launcher into
    ``<output_root>/<save_dir>``; the videos and prompts are logged to the MLflow run. Returns
    one row per video."""
    out_dir = Path(output_root) / params.save_dir
    job_dir = Path(output_root) / f".{params.save_dir}_job"
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = make_job_spec(
        inference_job.run, params, str(job_dir), inputs={"plan": plan, "out_dir": str(out_dir)}
    )
    samples = pd.DataFrame(launch(spec, launcher)["samples"], columns=SAMPLE_COLUMNS)
    if mlflow.active_run():
        for path in samples["video"].tolist() + samples["text"].tolist():
            mlflow.log_artifact(path, artifact_path=params.save_dir)
    logger.info("generated %d videos into %s", len(samples), out_dir)
    return samples
