"""How much of a trained stage's loss its text explains: correct captions vs shuffled ones.

Runs after the default chain (``make run``) on its trained models: Open-Sora v1.3's evaluation
loss (10 fixed t, fixed noise, posterior-mean latents) of ``diffusion_stage1`` on training-table
clips of at least 9 frames, once with each clip's own caption embedding and once with the
captions shuffled among the clips. A model that ignores its text scores both alike.

.venv/bin/python benchmarks/bench_text_dependence.py --clips 24
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from opensora_kedro.evaluation.diffusion_loss import diffusion_eval_loss
from opensora_kedro.models.mmdit_loading import load_mmdit
from opensora_kedro.models.vae.loading import load_autoencoder
from opensora_kedro.text.cache import EmbeddingCache

logger = logging.getLogger("bench_text_dependence")
STAGE = "diffusion_stage1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24, help="training clips measured")
    parser.add_argument("--env", default="local")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.setLevel(logging.INFO)  # Kedro's logging config (loaded by the session) keeps root quiet
    torch.set_num_threads(1)
    bootstrap_project(Path.cwd())
    with KedroSession.create(env=args.env) as session:
        context = session.load_context()
        stage = context.config_loader.resolved_parameters().models[STAGE]  # typed, as nodes get
        table = context.catalog.load("training_table")
    model = load_mmdit(
        stage.model.model_copy(update={"from_pretrained": f"data/06_models/{STAGE}"})
    )
    vae = load_autoencoder(stage.ae.model_copy(update={"from_pretrained": "data/06_models/vae"}))
    text = EmbeddingCache.open("data/04_feature/text_embeddings")
    rows = table[table["num_frames"] >= 9].sample(args.clips, random_state=0)
    rows = rows.reset_index(drop=True)
    shuffled = rows.assign(
        caption_hash=rows["caption_hash"].to_numpy()[
            np.random.default_rng(0).permutation(len(rows))
        ]
    )
    losses = {}
    for name, clips in (("own captions", rows), ("shuffled captions", shuffled)):
        _, summary = diffusion_eval_loss(model, vae, text, clips, stage, 10)
        losses[name] = summary["loss"]
    explained = 1 - losses["own captions"] / losses["shuffled captions"]
    shown = pd.Series(losses).round(4).to_dict()
    logger.info("%s on %d training clips: %s; text explains %.1f%% of the shuffled loss",
                STAGE, len(rows), shown, 100 * explained)  # fmt: skip


if __name__ == "__main__":
    main()
