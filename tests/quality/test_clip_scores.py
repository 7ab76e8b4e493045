"""Learned quality scores: tiny CLIP + aesthetic head built offline, loaded through the real
``from_pretrained`` / safetensors path, scoring rendered clips and a still."""

from __future__ import annotations

import hashlib
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from opensora_kedro.quality.clip_scores import AestheticHead, QualityScorer, load_aesthetic_head
from opensora_kedro.quality.params import QualityParams
from opensora_kedro.quality.tiny_models import build_tiny_aesthetic_head, build_tiny_clip
from opensora_kedro.video.codec import encode_image, encode_mp4
from opensora_kedro.video.decode import read_frames, sample_frames
from opensora_kedro.video.render import ClipSpec, render_frames

SPECS = [
    ClipSpec("red", "red", "circle", "left", 64, 48, 24, 20),
    ClipSpec("blue", "blue", "square", "up", 48, 64, 24, 12),
    ClipSpec("green", "green", "triangle", "static", 64, 64, 24, 1, suffix=".png"),
]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """Two rendered mp4 clips, a png still, the tiny CLIP and a matching aesthetic head."""
    folder = tmp_path_factory.mktemp("quality")
    rows = []
    for spec in SPECS:
        frames = render_frames(spec)
        path = folder / f"{spec.name}{spec.suffix}"
        data = encode_mp4(frames, spec.fps) if spec.suffix == ".mp4" else encode_image(
            frames[0], spec.suffix)  # fmt: skip
        path.write_bytes(data)
        rows.append({"path": str(path), "num_frames": spec.num_frames, "text": spec.caption})
    clip = build_tiny_clip([spec.caption for spec in SPECS], folder / "clip", seed=0)
    head = build_tiny_aesthetic_head(32, folder / "aesthetic.safetensors", seed=0)
    return {"folder": folder, "rows": rows, "clip": str(clip), "head": str(head)}


def _scorer(media: dict, **overrides) -> QualityScorer:
    settings = {"clip_model": media["clip"], "aesthetic_head": media["head"], **overrides}
    return QualityScorer(QualityParams(**settings))


def _scores(results: list[dict]) -> np.ndarray:
    return np.array([[r["aesthetic_score"], r["match_score"]] for r in results])


def test_the_head_has_the_released_checkpoint_keys():
    shapes = {k: tuple(v.shape) for k, v in AestheticHead(768).state_dict().items()}
    assert shapes == {
        "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
        "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
        "layers.4.weight": (64, 128), "layers.4.bias": (64,),
        "layers.6.weight": (16, 64), "layers.6.bias": (16,),
        "layers.7.weight": (1, 16), "layers.7.bias": (1,),
    }  # fmt: skip


def test_frames_are_sampled_evenly_and_a_still_gives_its_one_frame(media):
    clip, still = media["rows"][0]["path"], media["rows"][2]["path"]
    every = read_frames(clip)
    sampled = sample_frames(clip, 20, 3)
    assert len(sampled) == 3
    for frame, index in zip(sampled, [0, 10, 19], strict=True):
        assert np.array_equal(frame, every[index])
    assert len(sample_frames(still, 1, 3)) == 1
    # Metadata longer than the file: the frames there are, the last one standing in once.
    short = sample_frames(media["rows"][1]["path"], 100, 3)
    assert len(short) == 2 and np.array_equal(short[1], read_frames(media["rows"][1]["path"])[-1])


def test_scores_are_finite_and_follow_the_laion_and_clipscore_formulas(media):
    from transformers import CLIPModel, CLIPProcessor

    results = _scorer(media)(media["rows"])
    assert [r["path"] for r in results] == [row["path"] for row in media["rows"]]
    assert np.isfinite(_scores(results)).all()
    # By hand for the 20-frame clip: head on normalised embeddings, mean over 3 frames;
    # 100 x cosine of the caption and the mean normalised frame embedding.
    model = CLIPModel.from_pretrained(media["clip"], local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(media["clip"], local_files_only=True)
    head = load_aesthetic_head(media["head"], 32)
    frames = read_frames(media["rows"][0]["path"])[[0, 10, 19]]
    with torch.no_grad():
        pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
        images = torch.nn.functional.normalize(
            model.get_image_features(pixel_values=pixels), dim=-1
        )
        tokens = processor.tokenizer([SPECS[0].caption], return_tensors="pt")
        text = torch.nn.functional.normalize(model.get_text_features(**tokens), dim=-1)[0]
        aesthetic = head(images).mean().item()
        match = 100 * torch.nn.functional.cosine_similarity(images.mean(0), text, dim=0).item()
    assert results[0]["aesthetic_score"] == pytest.approx(aesthetic, abs=1e-5)
    assert results[0]["match_score"] == pytest.approx(match, abs=1e-3)


def test_two_scorers_agree_and_batching_equals_one_at_a_time(media):
    rows = media["rows"]
    batched = _scores(_scorer(media)(rows))
    again = _scores(_scorer(media)(rows))
    single = _scorer(media, batch_size=1)
    assert single.batch_size == 1 and _scorer(media).batch_size == 16  # what the engine reads
    one_by_one = _scores([out for row in rows for out in single([row])])
    assert np.array_equal(batched, again)
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-4)


def test_the_match_score_follows_the_caption_and_is_nan_without_one(media):
    rows = media["rows"]
    scorer = _scorer(media)
    swapped = [dict(row, text=SPECS[(i + 1) % 3].caption) for i, row in enumerate(rows)]
    missing = [dict(rows[0], text=None), dict(rows[1], text=float("nan")), dict(rows[2], text=" ")]
    base, other, none = scorer(rows), scorer(swapped), scorer(missing)
    for a, b, c in zip(base, other, none, strict=True):
        assert abs(a["match_score"] - b["match_score"]) > 0.1
        assert a["aesthetic_score"] == pytest.approx(b["aesthetic_score"], abs=1e-6)
        assert math.isnan(c["match_score"]) and math.isfinite(c["aesthetic_score"])


def test_without_a_head_the_aesthetic_score_is_nan(media):
    results = _scorer(media, aesthetic_head=None)(media["rows"][:1])
    assert math.isnan(results[0]["aesthetic_score"]) and math.isfinite(results[0]["match_score"])


def test_a_head_for_another_model_is_a_clear_error(media, tmp_path):
    wrong_dim = build_tiny_aesthetic_head(768, tmp_path / "l14.safetensors")
    with pytest.raises(ValueError, match="768-dim embeddings .* projection_dim is 32"):
        _scorer(media, aesthetic_head=str(wrong_dim))(media["rows"][:1])
    state = {k.replace("layers.", "mlp."): v for k, v in AestheticHead(32).state_dict().items()}
    save_file(state, tmp_path / "renamed.safetensors")
    with pytest.raises(ValueError, match="not a LAION aesthetic MLP: missing keys"):
        load_aesthetic_head(tmp_path / "renamed.safetensors", 32)
    state = AestheticHead(32).state_dict()
    state["layers.2.weight"] = torch.zeros(64, 1024)
    save_file(state, tmp_path / "resized.safetensors")
    with pytest.raises(ValueError, match="does not fit the MLP"):
        load_aesthetic_head(tmp_path / "resized.safetensors", 32)


def test_a_corrupt_or_missing_clip_gives_a_reason_and_the_others_score(media):
    corrupt = Path(media["folder"]) / "corrupt.mp4"
    corrupt.write_bytes(Path(media["rows"][0]["path"]).read_bytes()[:300])
    rows = [
        {"path": str(corrupt), "num_frames": 20, "text": "a red circle"},
        media["rows"][0],
        {"path": str(Path(media["folder"]) / "gone.mp4"), "num_frames": 5, "text": "x"},
    ]
    results = _scorer(media)(rows)
    assert [r["path"] for r in results] == [row["path"] for row in rows]
    for failed in (results[0], results[2]):
        assert failed["reason"] == "quality_failed" and "aesthetic_score" not in failed
        assert ":" in failed["detail"]
    assert results[2]["detail"].startswith("FileNotFoundError")
    assert np.isfinite(_scores(results[1:2])).all()


def test_the_scorer_pickles_before_and_after_loading(media):
    scorer = _scorer(media)
    fresh = pickle.loads(pickle.dumps(scorer))  # before first use: nothing loaded
    expected = _scores(scorer(media["rows"]))
    assert np.array_equal(_scores(fresh(media["rows"])), expected)
    shipped = pickle.dumps(scorer)  # after loading: the models stay behind
    assert len(shipped) < 2000
    assert np.array_equal(_scores(pickle.loads(shipped)(media["rows"])), expected)


def test_a_bad_model_folder_fails_at_setup(tmp_path, media):
    with pytest.raises(FileNotFoundError, match="CLIP model folder .* does not exist"):
        QualityScorer(QualityParams(clip_model=str(tmp_path / "nothing")))(media["rows"][:1])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_tiny_models_are_deterministic_and_built_once(tmp_path):
    captions = [spec.caption for spec in SPECS]
    first = build_tiny_clip(captions, tmp_path / "a", seed=3)
    second = build_tiny_clip(captions, tmp_path / "b", seed=3)
    other = build_tiny_clip(captions, tmp_path / "c", seed=4)
    files = sorted(p.name for p in first.iterdir())
    assert "model.safetensors" in files and "preprocessor_config.json" in files
    assert files == sorted(p.name for p in second.iterdir())
    for name in files:
        assert _digest(first / name) == _digest(second / name), name
    assert _digest(first / "model.safetensors") != _digest(other / "model.safetensors")
    with pytest.raises(FileExistsError):
        build_tiny_clip(captions, first)
    heads = [
        build_tiny_aesthetic_head(32, tmp_path / f"{s}.safetensors", seed=s) for s in (1, 1, 2)
    ]
    assert _digest(heads[0]) != _digest(heads[2])
    assert _digest(build_tiny_aesthetic_head(32, tmp_path / "1b.safetensors", seed=1)) == _digest(
        heads[0])  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging
