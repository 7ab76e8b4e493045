"""Batch generation as a launcher job: every rank generates its share of the prompts.

Runs in the Kedro process (``launcher.type: inprocess``) or on the workers ``colossalai run``
starts; ranks split the (prompt, sample) list round-robin, write their videos into the output
folder and rank 0 returns the rows of all of them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pandas as pd
import torch.distributed as dist

from opensora_kedro.config.schemas.inference import InferenceParams
from opensora_kedro.models.loading import load_generation_models
from opensora_kedro.runtime.distributed import rank, world_size
from opensora_kedro.runtime.launcher import JobSpec
from opensora_kedro.sampling.generate import generate_samples, save_sample
from opensora_kedro.sampling.settings import SamplingSettings, final_prompts, sample_seeds

logger = logging.getLogger(__name__)

SAMPLE_COLUMNS = ["index", "sample", "prompt", "final_prompt", "seed", "ref", "video", "text"]


def sample_plan(prompts: pd.DataFrame, params: InferenceParams) -> pd.DataFrame:
    """One row per video to make: each prompt ``num_samples`` times with its own seed."""
    settings = SamplingSettings.from_inference(params)
    rows = []
    for sample in range(params.num_samples):
        seeds = sample_seeds(settings, len(prompts), sample)
        for (index, row), seed in zip(prompts.iterrows(), seeds, strict=True):
            ref = row.get("ref")
            rows.append({"index": int(index), "sample": sample, "prompt": row["text"],
                         "seed": int(seed), "ref": None if pd.isna(ref) else ref})  # fmt: skip
    return pd.DataFrame(rows, columns=["index", "sample", "prompt", "seed", "ref"])


def sample_stem(index: int, sample: int, prompt: str) -> str:
    """A file name that sorts by prompt and says what it shows: ``0003-a-red-circle_s0``."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48]
    return f"{index:04d}-{slug}_s{sample}"


def generate_plan(plan: pd.DataFrame, params: InferenceParams, out_dir: str) -> list[dict]:
    """Generate and save every row of ``plan`` on this process; the rows, with file paths."""
    if plan.empty:
        return []
    settings = SamplingSettings.from_inference(params)
    models = load_generation_models(params)
    refs = plan["ref"].tolist() if plan["ref"].notna().any() else None
    videos, _ = generate_samples(
        models, plan["prompt"].tolist(), settings, plan["seed"].tolist(), refs
    )
    texts = final_prompts(plan["prompt"].tolist(), settings)
    rows = []
    for row, frames, text in zip(plan.to_dict("records"), videos, texts, strict=True):
        stem = sample_stem(row["index"], row["sample"], row["prompt"])
        video, txt = save_sample(frames, text, out_dir, stem, settings.fps_save)
        rows.append({**row, "final_prompt": text, "video": str(video), "text": str(txt)})
        logger.info("wrote %s", video)
    return rows


def run(spec: JobSpec[InferenceParams]) -> dict[str, Any]:
    """Job entry: this rank's share of ``spec.inputs["plan"]``; rank 0 returns every row."""
    plan = pd.read_parquet(spec.inputs["plan"])
    me, world = rank(), world_size()
    params = spec.params
    plugins = (
        ("plugin", params.plugin, "plugin_config", params.plugin_config),
        ("plugin_ae", params.plugin_ae, "plugin_config_ae", params.plugin_config_ae),
    )
    for key, plugin, config_key, config in plugins:
        if plugin:
            logger.warning(
                "inference %s %r (%s %s): sequence-parallel sampling is not built; each of "
                "the %d ranks generates whole videos",
                key, plugin, config_key, config, world,
            )  # fmt: skip
    rows = generate_plan(plan.iloc[me::world], params, spec.inputs["out_dir"])
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    rows.sort(key=lambda r: (r["sample"], r["index"]))
    return {"samples": rows}
