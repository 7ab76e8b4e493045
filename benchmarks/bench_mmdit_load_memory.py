"""Peak host memory while loading MMDiT weights (issue target: <= 1.3x the file size).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_mmdit_load_memory.py [--dir /tmp/mmdit_mem]

Writes two synthetic bf16 files of about 1 GB for the same model (hidden 1536, 12 heads of
128, 3 double + 7 single blocks): one in this project's layout, one in Open-Sora 2.0's
(unfused, rotate-half RoPE). Each load then runs in a fresh process, which reports its
resident memory after the imports (baseline) and its peak (``ru_maxrss``):

- ``ours``: :func:`load_mmdit_file` on our file (meta model, tensors read one at a time);
- ``foreign``: the same on the Open-Sora file (converted while it loads);
- ``load_file``: the previous way, ``safetensors.torch.load_file`` then ``load_state_dict``
  into a model built in bf16.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("bench_mmdit_load_memory")
SIZE = dict(in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=1536, num_heads=12,
            depth=3, depth_single_blocks=7, axes_dim=(16, 56, 56), cond_embed=True)  # fmt: skip


def _config():
    from opensora_kedro.models.mmdit import MMDiTConfig

    return MMDiTConfig(**SIZE)


def write_files(folder: Path) -> tuple[Path, Path]:
    """The synthetic files in both layouts (random bf16), written one tensor at a time."""
    import torch

    from opensora_kedro.models.mmdit_convert import target_shapes
    from opensora_kedro.models.safetensors_stream import write_safetensors
    from tests.models.mmdit_reference import foreign_shapes

    folder.mkdir(parents=True, exist_ok=True)
    config = _config()
    ours = {k: shape for k, (shape, _) in target_shapes(config).items()}
    theirs = foreign_shapes(config, fused=False)
    files = {"ours": (folder / "ours.safetensors", ours),
             "foreign": (folder / "open_sora.safetensors", theirs)}  # fmt: skip
    for path, shapes in files.values():
        if not path.exists():
            layout = [(k, torch.bfloat16, s) for k, s in shapes.items()]
            write_safetensors(path, layout, lambda k, s=shapes: torch.randn(s[k]).bfloat16())
    return files["ours"][0], files["foreign"][0]


def _rss_mib() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize() / 2**20


def measure(mode: str, file: Path) -> None:
    """Load ``file`` the ``mode`` way; print baseline and peak RSS (MiB) and seconds as JSON."""
    import torch

    from opensora_kedro.models.mmdit import MMDiT
    from opensora_kedro.models.mmdit_loading import load_mmdit_file

    torch.set_num_threads(1)
    baseline = _rss_mib()
    started = time.perf_counter()
    if mode == "load_file":
        from safetensors.torch import load_file

        model = MMDiT(_config()).to(torch.bfloat16)
        model.load_state_dict(load_file(str(file)), strict=True)
    else:
        model = load_mmdit_file(_config(), file, strict=True, liger_rope=True)
    seconds = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline": baseline, "peak": peak, "seconds": seconds, "params": params}))  # noqa: T201


def main() -> None:
    """Write the files, measure each way in a fresh process, print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="/tmp/mmdit_load_memory")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure[0], Path(args.measure[1]))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ours, foreign = write_files(Path(args.dir))
    logger.info("| load | file | baseline RSS | peak RSS | peak - baseline | added / file | "
                "peak / file | time |")  # fmt: skip
    logger.info("|---|---|---|---|---|---|---|---|")
    for mode, file in (("ours", ours), ("foreign", foreign), ("load_file", ours)):
        out = subprocess.run([sys.executable, __file__, "--measure", mode, str(file)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        result = json.loads(out.strip().splitlines()[-1])
        size = file.stat().st_size / 2**20
        added = result["peak"] - result["baseline"]
        row = "| %s | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.2f | %.2f | %.1f s |"
        logger.info(row, mode, size, result["baseline"], result["peak"], added, added / size,
                    result["peak"] / size, result["seconds"])  # fmt: skip


if __name__ == "__main__":
    main()
