"""Each per-clip stage of data_processing, timed in one run on the same clips (local engine,
2 threads; the captioner and the quality scorer are the tiny offline models of conf/local, so
their figures are decoding plus a tiny forward pass: a real VLM or CLIP ViT-L needs a GPU).

.venv/bin/python benchmarks/bench_curation.py --videos 48 --frames 60
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from opensora_kedro.captioning.params import CaptioningParams
from opensora_kedro.captioning.tiny_vlm import build_tiny_vlm
from opensora_kedro.config.schemas.data import DemoDataParams
from opensora_kedro.data.curation import caption_clips, score_quality
from opensora_kedro.data.dedup import hash_videos
from opensora_kedro.data.engine import EngineSettings
from opensora_kedro.data.motion_table import score_motion
from opensora_kedro.data.params import MotionParams, ShotParams
from opensora_kedro.data.scan import build_video_table
from opensora_kedro.data.shot_table import split_videos
from opensora_kedro.datasets.video_folder import VideoFolderDataset
from opensora_kedro.pipelines.demo_data.nodes import plan_clips, render_clips
from opensora_kedro.quality.params import QualityParams
from opensora_kedro.quality.tiny_models import build_tiny_aesthetic_head, build_tiny_clip

logger = logging.getLogger("bench_curation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    engine = EngineSettings(workers=2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # two thirds single-shot clips, one third videos of three shots of frames/3 each
        multishot = args.videos // 3
        shot_plan = {"count": multishot, "shots": 3, "frames": args.frames // 3}
        plan = {"num_clips": args.videos - multishot, "num_images": 0, "sizes": [[256, 144]],
                "fps": [24], "lengths": [args.frames], "seed": 0,
                "multishot": shot_plan}  # fmt: skip
        files, captions = render_clips(plan_clips(DemoDataParams.model_validate(plan)), crf=20)
        dataset = VideoFolderDataset(str(tmp / "videos"))
        dataset.save(files)
        folder = dataset.load()
        timings: dict[str, tuple[int, float]] = {}

        def timed(name, count, function, *arguments):
            started = time.perf_counter()
            result = function(*arguments)
            timings[name] = (count, time.perf_counter() - started)
            return result

        meta, _ = timed("scan (probe)", len(folder.files), build_video_table, folder, captions,
                        engine)  # fmt: skip
        shots = ShotParams(detector="adaptive", min_seconds=None, min_scene_frames=6)
        _, clips, _ = timed("shots (detect + cut)", len(meta), split_videos, meta, folder.root,
                            shots, tmp / "shots", engine)  # fmt: skip
        timed("dedup hashes", len(clips), hash_videos, clips, 4, engine)
        timed("motion score", len(clips), score_motion, clips, MotionParams(), engine)
        texts = captions["text"].tolist()
        vlm = build_tiny_vlm(tmp / "vlm", captions=texts)
        settings = CaptioningParams(enabled=True, model=str(vlm), max_new_tokens=20)
        uncaptioned = int(clips["text"].isna().sum())
        captioned, _, _ = timed("captions (tiny VLM, 20 tokens)", uncaptioned, caption_clips,
                                clips, settings, engine)  # fmt: skip
        clip = build_tiny_clip(texts, tmp / "clip")
        head = build_tiny_aesthetic_head(32, tmp / "head.safetensors")
        quality = QualityParams(clip_model=str(clip), aesthetic_head=str(head))
        timed("quality (tiny CLIP + head)", len(captioned), score_quality, captioned, quality,
              engine)  # fmt: skip
    logger.info("%d videos (%d of 3 shots), 256x144, %d frames each:", args.videos, multishot,
                args.frames)  # fmt: skip
    for name, (count, seconds) in timings.items():
        logger.info("  %-32s %4d clips in %6.2f s: %6.1f clips/s", name, count, seconds,
                    count / seconds)  # fmt: skip


if __name__ == "__main__":
    main()
