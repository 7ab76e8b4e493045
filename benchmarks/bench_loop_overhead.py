"""Per-step overhead of the shared training loop against a bare PyTorch loop.

    .venv/bin/python benchmarks/bench_loop_overhead.py --steps 200

Same model (an MLP), batch, data (a dataset of fixed tensors through a DataLoader) and
optimizer (AdamW) in both; ours adds the variable-shape sampler, the ColossalAI Booster (ddp
plugin, one process), gradient-norm computation, the LR scheduler and metric logging. EMA,
clipping and checkpoints are off in both, so only the machinery is measured. The two loops
alternate in rounds, and each keeps its best round.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from opensora_kedro.data.sampler import VariableShapeBatchSampler
from opensora_kedro.runtime.distributed import process_group
from opensora_kedro.runtime.tracking import MetricsLogger
from opensora_kedro.training.loop import Trainer
from opensora_kedro.training.params import LoopParams

logger = logging.getLogger("bench_loop_overhead")
WIDTH, BATCH, ROWS = 512, 64, 64 * 50


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))


class Data(torch.utils.data.Dataset):
    """Fixed random rows; indexable by int (bare loop) or SampleKey (ours)."""

    def __init__(self) -> None:
        self.x = torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return ROWS

    def __getitem__(self, key):
        return self.x[int(getattr(key, "index", key))]


def collate(items):
    x = torch.stack(items)
    return {"x": x, "index": list(range(len(items)))}


class Task:
    def build_model(self):
        return model()

    def build_data(self, rank, world_size):
        assignment = pd.DataFrame(
            {"bucket_resolution": "b", "bucket_num_frames": 1, "bucket_aspect": "1:1",
             "bucket_height": 1, "bucket_width": 1, "batch_size": BATCH, "sampling_interval": 1},
            index=range(ROWS),
        )  # fmt: skip
        sampler = VariableShapeBatchSampler(lambda epoch: assignment, num_replicas=1, rank=0)
        return Data(), sampler, collate

    def loss(self, net, batch):
        return nn.functional.mse_loss(net(batch["x"]), batch["x"]), {}


def bare(steps: int) -> float:
    torch.manual_seed(0)
    net = model()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loader = DataLoader(Data(), batch_size=BATCH, shuffle=True, collate_fn=collate)
    done, started = 0, time.perf_counter()
    while done < steps:
        for batch in loader:
            loss = nn.functional.mse_loss(net(batch["x"]), batch["x"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    return (time.perf_counter() - started) / steps


def ours(steps: int) -> float:
    settings = LoopParams(
        seed=0, epochs=10_000, max_steps=steps, accumulation_steps=1, grad_clip=None,
        log_every=10, ckpt_every=10**9, keep_n_latest=1, ema_decay=None,
        dtype="fp32", plugin="ddp", plugin_config={}, num_workers=0, dataset={}, bucket_config={},
        optim={"cls": "AdamW", "lr": 1e-4, "eps": 1e-8, "weight_decay": 0.01, "adamw_mode": True,
               "betas": (0.9, 0.999)},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(Task(), settings, Path(tmp), MetricsLogger(None, None, "", True))
        trainer.checkpoints.save = lambda step, parts: None  # the final save is not the loop
        started = time.perf_counter()
        trainer.fit()
        return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    with process_group():
        best = {"bare": float("inf"), "ours": float("inf")}
        for _ in range(args.rounds):
            best["bare"] = min(best["bare"], bare(args.steps))
            best["ours"] = min(best["ours"], ours(args.steps))
    overhead = best["ours"] / best["bare"] - 1
    logger.info(
        "bare %.2f ms/step, ours %.2f ms/step: overhead %+.1f%% (best of %d rounds of %d steps)",
        1e3 * best["bare"], 1e3 * best["ours"], 100 * overhead, args.rounds, args.steps,
    )  # fmt: skip


if __name__ == "__main__":
    main()
