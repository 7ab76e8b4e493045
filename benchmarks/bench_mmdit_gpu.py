"""Model FLOPs utilisation of a ~1B-parameter MMDiT training step on one GPU (bf16).

    python benchmarks/bench_mmdit_gpu.py --out results.json

Shape: a 256px (256x256), 33-frame clip through the Hunyuan VAE's compression (4x time, 8x
space, 16 channels, patch 2) = 9 x 16 x 16 = 2304 image tokens, plus 512 T5 tokens. One step =
forward, rectified-flow loss, backward and a fused AdamW update, weights in bf16.

FLOPs are counted by ``torch.utils.flop_counter`` over one real step (matmuls and attention),
so nothing is estimated by hand; MFU = counted FLOPs / step time / the bf16 matmul peak
measured in the same run (an 8192^3 product on random data). Needs only torch and this
package's ``models.mmdit`` and ``training.rectified_flow`` (no Kedro, no ColossalAI).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from opensora_kedro.diffusion import rectified_flow as rf
from opensora_kedro.models.mmdit import build_mmdit

logger = logging.getLogger("bench_mmdit_gpu")

# ~1.1B parameters: Open-Sora 2.0's block design at half its width and a third of its depth.
MODEL_1B = dict(
    hidden_size=1536, num_heads=12, axes_dim=[16, 56, 56], depth=7, depth_single_blocks=14,
    in_channels=64, vec_in_dim=768, context_in_dim=4096, cond_embed=True,
)  # fmt: skip
LATENT = (16, 9, 32, 32)  # channels, frames, height, width of a 256px 33-frame clip
TEXT_TOKENS = 512


def cuda_time(function, warmup: int, repeats: int) -> float:
    """Median seconds of ``function`` timed with CUDA events."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def matmul_peak() -> float:
    """Measured bf16 matmul FLOP/s (8192^3, random inputs)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    seconds = cuda_time(lambda: a @ b, warmup=3, repeats=20)
    return 2 * 8192**3 / seconds


def make_step(model, optimizer, batch: int):
    """A closure running one training step on fresh random latents and text."""
    c, t, h, w = LATENT
    x0 = torch.randn(batch, c, t, h, w, device="cuda", dtype=torch.bfloat16)
    txt = torch.randn(batch, TEXT_TOKENS, 4096, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(batch, 768, device="cuda", dtype=torch.bfloat16)
    cond = torch.zeros(batch, c + 1, t, h, w, device="cuda", dtype=torch.bfloat16)

    def step() -> None:
        ts = rf.sample_timesteps(batch, device="cuda").to(torch.bfloat16)
        noise = torch.randn_like(x0)
        velocity = model(rf.noise_input(x0, noise, ts), txt, y, ts, cond=cond)
        rf.flow_loss(velocity.float(), rf.velocity_target(x0, noise).float()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_variant(batch: int, compiled: bool, grad_ckpt: bool, peak: float) -> dict:
    torch.manual_seed(0)
    settings = (7, 14) if grad_ckpt else None
    model = build_mmdit(dict(MODEL_1B, grad_ckpt_settings=settings)).cuda().to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step = make_step(model, optimizer, batch)
    model.grad_ckpt_settings = None  # model FLOPs: the recomputation is not useful work
    with FlopCounterMode(display=False) as counter:  # eager: counts the real kernels' FLOPs
        step()
    model.grad_ckpt_settings = settings
    flops = counter.get_total_flops()
    if compiled:
        model.compile()
    started = time.perf_counter()
    step()  # compiles when asked to
    torch.cuda.synchronize()
    first = time.perf_counter() - started
    torch.cuda.reset_peak_memory_stats()
    seconds = cuda_time(step, warmup=3, repeats=10)
    result = dict(
        batch=batch, compiled=compiled, grad_ckpt=grad_ckpt, params=params, step_s=seconds,
        first_step_s=first, flops=flops, tflops=flops / seconds / 1e12,
        mfu=flops / seconds / peak, peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30,
        tokens_per_s=batch * (LATENT[1] * LATENT[2] * LATENT[3] // 4) / seconds,
    )  # fmt: skip
    del model, optimizer, step
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--compile", choices=["no", "yes", "both"], default="both")
    parser.add_argument("--grad-ckpt", action="store_true", help="also time grad checkpointing")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak()
    logger.info("%s: bf16 matmul peak %.0f TFLOP/s", torch.cuda.get_device_name(), peak / 1e12)
    compiles = {"no": [False], "yes": [True], "both": [False, True]}[args.compile]
    variants = [(b, c, False) for c in compiles for b in args.batches]
    if args.grad_ckpt:
        variants.append((max(args.batches), compiles[-1], True))
    results = []
    for batch, compiled, ckpt in variants:
        try:
            results.append(run_variant(batch, compiled, ckpt, peak))
        except Exception as error:  # keep the other variants' numbers
            logger.exception("variant batch=%d compiled=%s failed: %s", batch, compiled, error)
            torch.cuda.empty_cache()
            continue
        r = results[-1]
        logger.info(
            "batch %d compiled=%s ckpt=%s: %.3f s/step, %.0f TFLOP/s, MFU %.1f%%, peak %.1f GiB, "
            "%.0f image tokens/s (first step %.1f s, %.2fB params)", batch, compiled, ckpt,
            r["step_s"], r["tflops"], 100 * r["mfu"], r["peak_mem_gib"], r["tokens_per_s"],
            r["first_step_s"], r["params"] / 1e9,
        )  # fmt: skip
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(), "peak_flops": peak,
                       "results": results}, handle, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
