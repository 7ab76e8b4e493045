"""Kit check (c): one text-to-video and one image-to-video clip on the GPU, in bf16.

    .venv-gpu/bin/python benchmarks/gpu/check_inference.py --result c.json

``kedro run --env gpu --pipeline inference`` with the models check (a) trained: a prompt
(t2v), then the same prompt conditioned on the first clip's first frame (``i2v_head``). Each
clip must exist and decode to the frames the preset asks for.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from opensora_kedro.video.decode import read_frames

logger = logging.getLogger("check_inference")

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data/07_model_output/samples.csv"
PROMPT = "a red circle moving left"


def generate(name: str, params: str, logs: Path, env: str) -> dict:
    """One ``kedro run`` of the inference pipeline; the clip it wrote, decoded."""
    started = time.monotonic()
    command = [sys.executable, "-m", "kedro", "run", "--env", env, "--pipeline", "inference",
               "--params", params]  # fmt: skip
    with (logs / f"{name}.log").open("w") as handle:
        rc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    step = {"name": name, "rc": rc, "seconds": round(time.monotonic() - started, 1)}
    if rc == 0 and SAMPLES.exists():
        video = Path(pd.read_csv(SAMPLES).loc[0, "video"])
        video = video if video.is_absolute() else ROOT / video
        step["video"] = str(video)
        step["frames"] = list(read_frames(str(video)).shape) if video.exists() else None
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--env", default="gpu", help="Kedro env (gpu; local runs it on a CPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logs = args.result.parent / "c_inference_logs"
    logs.mkdir(parents=True, exist_ok=True)
    t2v = generate(
        "t2v", f"inference.prompt={PROMPT},inference.save_dir=gpu_check_t2v", logs, args.env
    )
    steps = [t2v]
    if t2v.get("frames"):
        steps.append(generate("i2v", f"inference.prompt={PROMPT},inference.cond_type=i2v_head,"
                              f"inference.ref={t2v['video']},inference.save_dir=gpu_check_i2v",
                              logs, args.env))  # fmt: skip
    ok = len(steps) == 2 and all(s["rc"] == 0 and s.get("frames") for s in steps)
    args.result.write_text(json.dumps({"ok": ok, "steps": steps}, indent=1))
    logger.info("%s", steps)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
