"""Kit check (b): what our training loop costs on a GPU, in model FLOPs utilisation.

    .venv-gpu/bin/python benchmarks/gpu/check_loop_mfu.py --result b.json

The ~1.1B-parameter MMDiT of ``bench_mmdit_gpu.py`` (a 256px 33-frame clip: 2304 image + 512
text tokens, batch 8, ``torch.compile``) trained twice in one process: the bare step of that
benchmark (bf16 weights, fused AdamW), then through :class:`~opensora_kedro.training.loop.Trainer`
as a stage trains -- a ColossalAI Booster with LowLevelZeroPlugin (ZeRO-2, bf16 with fp32 master
weights), HybridAdam, the variable-shape batch sampler, a DataLoader, LR schedule and metric
logging (checkpoints off). Both MFUs use the FLOPs counted over one bare step and the bf16
matmul peak measured in this run; the target is a loop within 5% of the bare step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the bare step

import bench_mmdit_gpu as bench  # noqa: E402

from opensora_kedro.data.sampler import VariableShapeBatchSampler  # noqa: E402
from opensora_kedro.diffusion import rectified_flow as rf  # noqa: E402
from opensora_kedro.models.mmdit import build_mmdit  # noqa: E402
from opensora_kedro.runtime.distributed import process_group  # noqa: E402
from opensora_kedro.runtime.tracking import MetricsLogger  # noqa: E402
from opensora_kedro.training.loop import Trainer  # noqa: E402
from opensora_kedro.training.params import LoopParams

logger = logging.getLogger("check_loop_mfu")
TARGET_RATIO = 0.95


class Rows(torch.utils.data.Dataset):
    """Sample keys in, their row index out (the step's tensors live on the GPU already)."""

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, key) -> int:
        return int(getattr(key, "index", key))


def collate(items: list[int]) -> dict:
    return {"index": torch.tensor(items)}


class BenchTask:
    """The benchmark's step as a training task: same model, shapes and loss."""

    def __init__(self, batch: int, steps_per_epoch: int = 1000) -> None:
        self.batch, self.rows = batch, batch * steps_per_epoch
        c, t, h, w = bench.LATENT
        kwargs = dict(device="cuda", dtype=torch.bfloat16)
        self.x0 = torch.randn(batch, c, t, h, w, **kwargs)
        self.txt = torch.randn(batch, bench.TEXT_TOKENS, 4096, **kwargs)
        self.y = torch.randn(batch, 768, **kwargs)
        self.cond = torch.zeros(batch, c + 1, t, h, w, **kwargs)

    def build_model(self):
        return build_mmdit(dict(bench.MODEL_1B, grad_ckpt_settings=None))

    def build_data(self, rank: int, world_size: int):
        assignment = pd.DataFrame(
            {"bucket_resolution": "256px", "bucket_num_frames": 33, "bucket_aspect": "1:1",
             "bucket_height": 256, "bucket_width": 256, "batch_size": self.batch,
             "sampling_interval": 1},
            index=range(self.rows),
        )  # fmt: skip
        sampler = VariableShapeBatchSampler(lambda epoch: assignment, num_replicas=world_size,
                                            rank=rank)  # fmt: skip
        return Rows(), sampler, collate

    def loss(self, model, batch):
        ts = rf.sample_timesteps(self.batch, device="cuda").to(torch.bfloat16)
        noise = torch.randn_like(self.x0)
        velocity = model(rf.noise_input(self.x0, noise, ts), self.txt, self.y, ts, cond=self.cond)
        return rf.flow_loss(velocity.float(), rf.velocity_target(self.x0, noise).float()), {}


def loop_step_seconds(batch: int, warmup: int, steps: int) -> tuple[float, float, float]:
    """``(seconds per step, first fit's seconds, peak GiB)`` of the Trainer on the bench task."""
    settings = LoopParams(
        seed=0, epochs=1000, max_steps=warmup, accumulation_steps=1, grad_clip=None,
        log_every=10, ckpt_every=10**9, keep_n_latest=1, ema_decay=None, dataset={},
        bucket_config={}, dtype="bf16", plugin="zero2", plugin_config={"reduce_bucket_size_in_m":
        128, "overlap_allgather": False}, num_workers=0, compile=True,
        optim={"cls": "HybridAdam", "lr": 1e-4, "eps": 1e-8, "weight_decay": 0.0,
               "adamw_mode": True, "betas": (0.9, 0.999)},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            BenchTask(batch), settings, Path(tmp), MetricsLogger(None, None, "", True)
        )
        # A 1.1B model's checkpoint (optimizer included) is not the loop's per-step cost.
        trainer.checkpoints.save = lambda step, parts: None
        started = time.perf_counter()
        trainer.fit()  # compiles
        torch.cuda.synchronize()
        first = time.perf_counter() - started
        torch.cuda.reset_peak_memory_stats()
        trainer.settings = settings.model_copy(update={"max_steps": warmup + steps})
        started = time.perf_counter()
        trainer.fit()
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / steps
        peak = torch.cuda.max_memory_allocated() / 2**30
    return seconds, first, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = bench.matmul_peak()
    bare = bench.run_variant(args.batch, compiled=True, grad_ckpt=False, peak=peak)
    logger.info("bare: %.3f s/step, MFU %.1f%%", bare["step_s"], 100 * bare["mfu"])
    with process_group():
        step_s, first_s, peak_gib = loop_step_seconds(args.batch, warmup=3, steps=args.steps)
    mfu = bare["flops"] / step_s / peak
    ratio = mfu / bare["mfu"]
    result = {
        "ok": True, "device": torch.cuda.get_device_name(), "peak_flops": peak, "bare": bare,
        "loop": {"step_s": step_s, "first_fit_s": first_s, "mfu": mfu, "peak_mem_gib": peak_gib,
                 "plugin": "zero2", "optimizer": "HybridAdam", "compiled": True},
        "ratio": ratio, "target_ratio": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO,
    }  # fmt: skip
    logger.info("loop: %.3f s/step, MFU %.1f%% = %.3f of the bare step (target >= %.2f)",
                step_s, 100 * mfu, ratio, TARGET_RATIO)  # fmt: skip
    args.result.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
