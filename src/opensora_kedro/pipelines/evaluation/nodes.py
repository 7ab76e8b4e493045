"""Nodes of the ``evaluation`` pipeline: held-out diffusion loss, VAE reconstruction,
prompt following measured from generated pixels, and the report that gathers them."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.config.schemas.evaluation import EvaluationParams
from opensora_kedro.config.schemas.inference import InferenceParams
from opensora_kedro.config.schemas.vae import VaeTrainingParams
from opensora_kedro.data.holdout import split_holdout
from opensora_kedro.evaluation.diffusion_loss import bucket_losses, diffusion_eval_loss
from opensora_kedro.evaluation.prompt_following import (
    CHANCE,
    evaluation_prompts,
    prompt_following,
    result_label,
)
from opensora_kedro.evaluation.report import animated_gif, contact_sheet, markdown_report
from opensora_kedro.evaluation.vae import evaluate_reconstruction
from opensora_kedro.models.loading import load_generation_models
from opensora_kedro.models.mmdit_loading import load_mmdit
from opensora_kedro.models.vae.loading import load_autoencoder
from opensora_kedro.sampling.generate import generate
from opensora_kedro.sampling.prompts import resolve_motion_score
from opensora_kedro.sampling.settings import SamplingSettings
from opensora_kedro.text.cache import EmbeddingCache

logger = logging.getLogger(__name__)


def _metrics(values: dict[str, float], prefix: str) -> dict[str, dict[str, float]]:
    """kedro-mlflow's metrics-history form: ``{name: {"value": v, "step": 0}}``."""
    return {f"{prefix}{k}": {"value": float(v), "step": 0} for k, v in values.items()}


def _trained(model_dir: str | None) -> str:
    if model_dir is None:
        raise ValueError("diffusion_stage1 has no trained model yet: run its pipeline first")
    return model_dir


def evaluate_diffusion_loss(
    model_dir: str,
    vae_dir: str,
    text: EmbeddingCache,
    table: pd.DataFrame,
    stage: DiffusionStageParams,
    params: EvaluationParams,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Open-Sora v1.3's evaluation loss of the stage's model on the clips its training held
    out: per bucket, at ``loss.num_timesteps`` evenly spaced t."""
    _, held = split_holdout(table, stage.eval.holdout_fraction)
    held = held.head(params.loss.max_clips)
    model = load_mmdit(stage.model.model_copy(update={"from_pretrained": _trained(model_dir)}))
    vae = load_autoencoder(stage.ae.model_copy(update={"from_pretrained": vae_dir}))
    losses, summary = diffusion_eval_loss(model, vae, text, held, stage, params.loss.num_timesteps)
    return losses, {"table": bucket_losses(losses).to_dict("records"), **summary}


def evaluate_vae_reconstruction(
    vae_dir: str, table: pd.DataFrame, vae: VaeTrainingParams
) -> dict[str, float]:
    """PSNR / SSIM of the trained autoencoder on the clips its training held out."""
    metrics, _ = evaluate_reconstruction(vae_dir, table, vae)
    return metrics


def _generation_params(
    inference: InferenceParams,
    model_dir: str,
    vae_dir: str,
    params: EvaluationParams,
    table: pd.DataFrame,
) -> InferenceParams:
    """The inference preset, pointed at the evaluated models, with the evaluation's overrides
    (``motion_score: auto`` read from the training table)."""
    options = params.prompt_following
    # Validated as sampling_option values by the schema.
    sampling = inference.sampling_option.model_copy(update=options.sampling or {})
    return inference.model_copy(update={
        "sampling_option": sampling, "batch_size": options.batch_size,
        "motion_score": resolve_motion_score(inference.motion_score, table),
        "model": inference.model.model_copy(update={"from_pretrained": model_dir}),
        "ae": inference.ae.model_copy(update={"from_pretrained": vae_dir}),
    })  # fmt: skip


def evaluate_prompt_following(
    model_dir: str,
    vae_dir: str,
    table: pd.DataFrame,
    params: EvaluationParams,
    inference: InferenceParams,
) -> tuple[pd.DataFrame, dict[str, float], Image.Image, bytes]:
    """Generate clips for demo-grammar prompts of combinations the training captions lack
    (unseen) and of trained ones (seen), and measure their colour and motion direction from
    the pixels against the prompt."""
    options = params.prompt_following
    asked = evaluation_prompts(
        table["text"], options.num_unseen_prompts, options.num_seen_prompts, options.seed
    )
    prompts = asked["prompt"].tolist()
    generation = _generation_params(inference, _trained(model_dir), vae_dir, params, table)
    settings = SamplingSettings.from_inference(generation)
    models = load_generation_models(generation)
    seeds = [settings.seed + i for i in range(len(prompts))]
    with torch.inference_mode():
        videos = generate(models.model, models.vae, models.encoders, prompts, settings, seeds)
    results, summary = prompt_following(videos, prompts, asked["seen"].tolist())
    labels = [result_label(row) for row in results.to_dict("records")]
    sheet = Image.fromarray(contact_sheet(videos, labels, frames_per_clip=options.frames_shown))
    return results, summary, sheet, animated_gif(videos, labels, fps=settings.fps_save / 3)


# The headline figures the log line shows.
LOGGED = ("diffusion_eval_loss", "vae_psnr", "unseen_colour_accuracy", "unseen_direction_accuracy",
          "seen_colour_accuracy", "seen_direction_accuracy")  # fmt: skip


def following_table(summary: dict[str, float]) -> pd.DataFrame:
    """Prompt following per group (unseen combinations, seen ones, all) with 95% intervals
    and chance levels: the report's headline table."""
    rows = []
    for group, prefix in (("unseen combinations", "unseen_"), ("seen combinations", "seen_"),
                          ("all", "")):  # fmt: skip
        if f"{prefix}samples" not in summary:
            continue
        row: dict[str, Any] = {"prompts": group, "n": int(summary[f"{prefix}samples"])}
        for name in ("colour", "direction", "both"):
            value = summary[f"{prefix}{name}_accuracy"]
            low, high = summary[f"{prefix}{name}_ci_low"], summary[f"{prefix}{name}_ci_high"]
            row[name] = f"{value:.0%} [{low:.0%}, {high:.0%}]" if row["n"] else "-"
        rows.append(row)
    chance = {"prompts": "chance", "n": "", "both": f"{np.prod(list(CHANCE.values())):.0%}"}
    rows.append({**chance, **{name: f"{value:.0%}" for name, value in CHANCE.items()}})
    return pd.DataFrame(rows, columns=["prompts", "n", "colour", "direction", "both"])


def write_report(
    loss: dict[str, Any], vae: dict[str, float], following: dict[str, float],
    results: pd.DataFrame,
) -> tuple[str, dict[str, dict[str, float]]]:  # fmt: skip
    """The Markdown report (08_reporting) and the headline metrics for MLflow."""
    reconstruction = {f"vae_{k}": v for k, v in vae.items() if k != "clips"}
    headline = {
        "diffusion_eval_loss": loss["loss"],
        **reconstruction,
        **{k: v for k, v in following.items() if not k.startswith("chance_")},
    }
    shown = results.drop(columns=["parsed"], errors="ignore")
    report = markdown_report(
        {"diffusion_eval_loss": loss["loss"], **reconstruction,
         "vae_clips": vae.get("clips", np.nan), "diffusion_eval_clips": loss["samples"]},
        {"Prompt following (accuracy [95% interval]; unseen: combinations no training "
         "caption describes)": following_table(following),
         "Diffusion loss per bucket (held-out clips)": pd.DataFrame(loss["table"]),
         "Prompt following per clip": shown},
        title="Evaluation of the embedded default",
    )  # fmt: skip
    shown = [k for k in LOGGED if k in headline]
    logger.info("evaluation: %s", ", ".join(f"{k} {headline[k]:.3f}" for k in shown))
    return report, _metrics(headline, "eval_")
