"""data_processing on uncut, partly uncaptioned, partly duplicated footage, with every curation
stage on (shots, dedup, VLM captions, quality scores): the issue's "done when"."""

import numpy as np
import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from opensora_kedro.captioning.tiny_vlm import build_tiny_vlm
from opensora_kedro.data import dedup, motion_table, scan
from opensora_kedro.pipelines.data_processing import create_pipeline
from opensora_kedro.quality.tiny_models import build_tiny_aesthetic_head, build_tiny_clip
from opensora_kedro.video.codec import encode_mp4
from opensora_kedro.video.render import ClipSpec, render_shot_sequence
from tests.conftest import gradient_frames, write_video
from tests.pipelines.data_processing.test_pipeline import _catalog


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    vlm = build_tiny_vlm(folder / "vlm", captions=["a clip of a scene"])
    clip = build_tiny_clip(["a clip of a scene"], folder / "clip")
    head = build_tiny_aesthetic_head(32, folder / "head.safetensors")
    return str(vlm), str(clip), str(head)


def _three_shots(path, seed: int) -> list[tuple[int, int]]:
    specs = [
        ClipSpec(
            name=f"s{k}",
            colour=c,
            shape=s,
            direction=d,
            width=64,
            height=48,
            fps=12,
            num_frames=12,
            seed=seed + k,
            background=bg,
        )
        for k, (c, s, d, bg) in enumerate(
            [
                ("red", "circle", "left", (40, 40, 48)),
                ("blue", "square", "up", (200, 200, 210)),
                ("green", "triangle", "right", (60, 120, 70)),
            ]
        )
    ]
    path.write_bytes(encode_mp4(render_shot_sequence(specs), 12, crf=18))  # fmt: skip
    return [(0, 12), (12, 24), (24, 36)]


def _noise(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    write_video(path, rng.integers(0, 255, (10, 48, 64, 3), dtype=np.uint8), fps=12)


def _record_calls(monkeypatch) -> dict:
    """Which files each per-clip stage worked on (the engine calls these per clip or batch)."""
    from opensora_kedro.captioning.vlm import VlmCaptioner
    from opensora_kedro.quality.clip_scores import QualityScorer
    from opensora_kedro.video.shots import ShotSplitter

    calls: dict = {}

    def spy(owner, name, stage, per_row):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            rows = args[1] if not per_row else [args[0]]
            calls.setdefault(stage, []).extend(r["path"].rsplit("/", 1)[-1] for r in rows)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)

    spy(scan, "_probe_row", "scan", True)
    spy(ShotSplitter, "__call__", "shots", False)
    spy(dedup, "_hash_row", "dedup", True)
    spy(motion_table, "_score_row", "motion", True)
    spy(VlmCaptioner, "__call__", "captioning", False)
    spy(QualityScorer, "__call__", "quality", False)
    return calls


def test_uncut_uncaptioned_duplicated_footage_becomes_captioned_scored_clips(
    tmp_path, models, monkeypatch
):
    vlm, clip, head = models
    raw = tmp_path / "raw"
    raw.mkdir()
    cuts = _three_shots(raw / "long.mp4", seed=1)  # uncaptioned, three shots
    frames = gradient_frames(12, 48, 64)
    write_video(raw / "a.mp4", frames, fps=12)
    write_video(raw / "a_small.mp4", np.ascontiguousarray(frames[:, ::2, ::2]), fps=12)  # dup
    _noise(raw / "b.mp4", seed=2)  # uncaptioned
    (raw / "broken.mp4").write_text("not a video")
    captions = pd.DataFrame({"path": ["a.mp4", "a_small.mp4", "broken.mp4"],
                             "text": ["a gradient", "a gradient", "x"]})  # fmt: skip
    params = dict(
        shots={"enabled": True, "min_seconds": None, "min_scene_frames": 4},
        dedup={"enabled": True},
        captioning={"enabled": True, "model": vlm, "prompt": "Describe this video.",
                    "frames": 2, "max_new_tokens": 6, "batch_size": 2, "device": "cpu",
                    "dtype": "auto"},
        quality={"enabled": True, "clip_model": clip, "aesthetic_head": head,
                 "build_if_missing": False, "frames": 2, "batch_size": 4, "device": "cpu"},
    )  # fmt: skip
    catalog = _catalog(raw, captions, **params)
    SequentialRunner().run(create_pipeline(), catalog)

    clips = catalog.load("video_clips").set_index("path")
    shots = clips[clips["source"] == str(raw / "long.mp4")]
    assert list(zip(shots["start_frame"], shots["end_frame"], strict=True)) == cuts
    assert all(p.startswith(str(tmp_path / "tables" / "shots")) for p in shots.index)
    assert clips.loc[str(raw / "a.mp4"), "source"] == str(raw / "a.mp4")  # one shot: itself
    rejected = catalog.load("rejected_videos")
    reasons = dict(zip(rejected["path"].str.rsplit("/", n=1).str[-1], rejected["reason"],
                       strict=True))  # fmt: skip
    assert reasons == {"broken.mp4": "not_a_video", "a_small.mp4": "duplicate"}
    table = catalog.load("training_table").set_index("path")
    assert len(table) == 5  # three shots, a, b
    vlm_written = table[table["caption_model"] == "vlm"]
    assert set(vlm_written.index) == {*shots.index, str(raw / "b.mp4")}
    assert vlm_written["caption"].str.len().gt(0).all()
    assert table.loc[str(raw / "a.mp4"), "caption"] == "a gradient"  # its own caption kept
    quality = catalog.load("quality_scores")
    assert (
        len(quality) == 5 and np.isfinite(quality[["aesthetic_score", "match_score"]]).all().all()
    )

    calls = _record_calls(monkeypatch)
    _noise(raw / "c.mp4", seed=3)  # one new uncaptioned video
    SequentialRunner().run(create_pipeline(), _catalog(raw, captions, **params))
    calls.pop("scan")  # broken.mp4 is probed again every run, as a fixed file would be
    assert calls == {stage: ["c.mp4"] for stage in
                     ("shots", "dedup", "motion", "captioning", "quality")}  # fmt: skip
