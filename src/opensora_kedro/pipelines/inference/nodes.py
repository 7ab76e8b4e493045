"""Nodes of the ``inference`` pipeline: gather the prompts, generate through the launcher."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd

from opensora_kedro.sampling import inference_job
from opensora_kedro.sampling.inference_job import SAMPLE_COLUMNS, sample_plan
from opensora_kedro.sampling.prompts import resolve_motion_score
from opensora_kedro.training.launcher import JobSpec, entry_point, launch

logger = logging.getLogger(__name__)


def collect_prompts(params: dict) -> pd.DataFrame:
    """The prompts to generate: ``prompt`` (with ``ref``), or the rows ``start_index`` to
    ``end_index`` of ``prompt_csv`` (column ``text``, optional ``ref``). Never both: the
    config layer keeps the one given with --params, and anything else is refused here."""
    if params.get("prompt") and params.get("prompt_csv"):
        raise ValueError(
            f"inference.prompt ({params['prompt']!r}) and inference.prompt_csv "
            f"({params['prompt_csv']!r}) are both set: set only one"
        )
    if params.get("prompt"):
        return pd.DataFrame({"text": [params["prompt"]], "ref": [params.get("ref")]})
    if not params.get("prompt_csv"):
        raise ValueError(
            'nothing to generate: set inference.prompt (--params "inference.prompt=a red circle '
            'moving left") or inference.prompt_csv (a CSV with a text column)'
        )
    table = pd.read_csv(params["prompt_csv"])
    if "text" not in table.columns:
        raise ValueError(f"{params['prompt_csv']} has no 'text' column (found {list(table)})")
    if "ref" not in table.columns:
        table["ref"] = None
    rows = table.iloc[params.get("start_index") or 0 : params.get("end_index")]
    if rows.empty:
        raise ValueError(f"no prompts in {params['prompt_csv']} between start and end index")
    return rows[["text", "ref"]]


def settle_inference_params(params: dict, training_table: pd.DataFrame) -> dict:
    """The inference parameters with ``motion_score: auto`` read from the training table (an
    empty table when there is none)."""
    return {**params, "motion_score": resolve_motion_score(params["motion_score"], training_table)}


def generate_videos(
    prompts: pd.DataFrame, params: dict, launcher: dict, output_root: str
) -> pd.DataFrame:
    """Generate every (prompt, sample) through the launcher into ``<output_root>/<save_dir>``;
    the videos and prompts are logged to the MLflow run. Returns one row per video."""
    out_dir = Path(output_root) / params["save_dir"]
    job_dir = Path(output_root) / f".{params['save_dir']}_job"
    job_dir.mkdir(parents=True, exist_ok=True)
    plan = sample_plan(prompts, params)
    plan.to_parquet(job_dir / "plan.parquet")
    active = mlflow.active_run()
    spec = JobSpec(
        entry=entry_point(inference_job.run),
        params=params,
        output_dir=str(job_dir),
        inputs={"plan": str(job_dir / "plan.parquet"), "out_dir": str(out_dir)},
        mlflow_tracking_uri=mlflow.get_tracking_uri(),
        mlflow_run_id=active.info.run_id if active else None,
    )
    samples = pd.DataFrame(launch(spec, launcher)["samples"], columns=SAMPLE_COLUMNS)
    if active:
        for path in samples["video"].tolist() + samples["text"].tolist():
            mlflow.log_artifact(path, artifact_path=params["save_dir"])
    logger.info("generated %d videos into %s", len(samples), out_dir)
    return samples
