"""VLM captioning through the real loading path, against a tiny LLaVA built offline."""

from __future__ import annotations

import pickle
from pathlib import Path

import av
import numpy as np
import pytest

from opensora_kedro.captioning.params import CaptioningParams
from opensora_kedro.captioning.tiny_vlm import build_tiny_vlm
from opensora_kedro.captioning.vlm import VlmCaptioner
from opensora_kedro.video.codec import encode_image, encode_mp4
from opensora_kedro.video.decode import frame_indices
from opensora_kedro.video.render import ClipSpec, render_frames
from tests.conftest import corrupt_media_data, write_audio

CLIPS = [
    ClipSpec("red", "red", "circle", "left", 64, 48, 12.0, 8, seed=1),
    ClipSpec("blue", "blue", "square", "up", 48, 64, 12.0, 6, seed=2),
    ClipSpec("green", "green", "triangle", "right", 64, 64, 12.0, 2, seed=3),
    ClipSpec("still", "yellow", "circle", "static", 40, 30, 0.0, 1, suffix=".png", seed=4),
]


def _no_frames(path: Path) -> Path:
    """A video file with a video stream and not one frame in it (AVI keeps its header)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vlm")
    return build_tiny_vlm(root / "tiny_vlm", seed=0, captions=[s.caption for s in CLIPS])


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    """Three rendered clips (8, 6 and 2 frames) and a png still."""
    root = tmp_path_factory.mktemp("clips")
    found = []
    for spec in CLIPS:
        path = root / f"{spec.name}{spec.suffix}"
        frames = render_frames(spec)
        path.write_bytes(
            encode_mp4(frames, spec.fps)
            if spec.suffix == ".mp4"
            else encode_image(frames[0], ".png")
        )
        found.append({"path": str(path), "num_frames": spec.num_frames})
    return found


@pytest.fixture(scope="module")
def captioner(vlm_folder) -> VlmCaptioner:
    return VlmCaptioner(CaptioningParams(model=str(vlm_folder), max_new_tokens=12))


def test_frames_are_spread_over_the_clip_and_never_repeated():
    assert frame_indices(10, 3) == [0, 4, 9]
    assert frame_indices(2, 3) == [0, 1]
    assert frame_indices(1, 3) == [0]
    assert frame_indices(0, 3) == [0]  # unknown length: try the first frame


def test_clips_and_a_still_get_non_empty_deterministic_captions(vlm_folder, rows, captioner):
    first = captioner(rows)
    again = VlmCaptioner(CaptioningParams(model=str(vlm_folder), max_new_tokens=12))(rows)
    assert first == again  # a fresh load of the saved model: the same words
    assert [r["path"] for r in first] == [r["path"] for r in rows]
    assert all(r["caption"].strip() and "reason" not in r for r in first)
    assert {r["caption_model"] for r in first} == {"tiny_vlm"}
    assert len({r["caption"] for r in first}) == len(rows)  # the frames steer the words
    # The processor's chat template made the prompt: one <image> per frame, then the turn.
    prompt = captioner.prompt_text(3)
    assert prompt.count("<image>") == 3 and prompt.endswith("ASSISTANT:")
    assert "Describe this video in one sentence." in prompt


def test_a_batch_captions_as_each_clip_alone(vlm_folder, rows, captioner):
    # The still has one image, the clips two or three: the batch is left-padded.
    batched = captioner(rows)
    alone_params = CaptioningParams(model=str(vlm_folder), max_new_tokens=12, batch_size=1)
    alone = VlmCaptioner(alone_params)
    assert batched == [alone([row])[0] for row in rows]


def test_a_bad_clip_gets_a_reason_and_the_others_their_captions(tmp_path, rows, captioner):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(Path(rows[0]["path"]).read_bytes())
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    bad = [
        {"path": str(corrupt_media_data(corrupt)), "num_frames": 8},
        {"path": str(_no_frames(tmp_path / "empty.avi")), "num_frames": 8},
        {"path": str(garbage), "num_frames": 8},
        {"path": str(write_audio(tmp_path / "audio.m4a")), "num_frames": 8},
        {"path": str(tmp_path / "missing.mp4"), "num_frames": 8},
        {"path": str(tmp_path / "no_count.mp4")},
    ]
    results = captioner([bad[0], rows[0], *bad[1:], rows[1]])
    assert [r["path"] for r in results] == [bad[0]["path"], rows[0]["path"],
                                            *[b["path"] for b in bad[1:]], rows[1]["path"]]  # fmt: skip
    reasons = [r.get("reason") for r in results]
    assert reasons == ["decode_failed", None, "no_frames", "decode_failed", "decode_failed",
                       "decode_failed", "bad_row", None]  # fmt: skip
    assert all(": " in r["detail"] for r in results if "reason" in r)
    assert [r["caption"] for r in results if "caption" in r] == [
        r["caption"] for r in captioner(rows[:2])
    ]


class _RejectsSmallImages:
    """The tiny processor, refusing images under 16 px as Qwen2-VL's refuses those under
    its 28 px patch."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, images, **kwargs):
        if min(min(image.shape[:2]) for image in images) < 16:
            raise ValueError("height:8 or width:8 must be larger than factor:16")
        return self.processor(images=images, **kwargs)


def test_a_clip_the_processor_rejects_fails_alone(tmp_path, vlm_folder, rows):
    small = tmp_path / "small.png"
    small.write_bytes(encode_image(np.full((8, 8, 3), 200, np.uint8), ".png"))
    captioner = VlmCaptioner(CaptioningParams(model=str(vlm_folder), max_new_tokens=12))
    captioner.load()
    expected = captioner(rows[:2])
    captioner._processor = _RejectsSmallImages(captioner._processor)
    results = captioner([rows[0], {"path": str(small), "num_frames": 1}, rows[1]])
    assert results[1]["reason"] == "caption_failed" and "factor:16" in results[1]["detail"]
    assert [results[0], results[2]] == expected


def test_a_model_that_writes_only_special_tokens_gives_empty_caption(vlm_folder, rows):
    captioner = VlmCaptioner(CaptioningParams(model=str(vlm_folder), max_new_tokens=4))
    captioner.load()
    tokenizer = captioner._processor.tokenizer
    words = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    captioner._model.generation_config.suppress_tokens = words  # only special tokens remain
    results = captioner(rows[:1])
    assert results == [{"path": rows[0]["path"], "reason": "empty_caption",
                        "detail": "ValueError: the model wrote no text"}]  # fmt: skip


def test_the_captioner_pickles_before_and_after_use(vlm_folder, rows, captioner):
    fresh = VlmCaptioner(CaptioningParams(model=str(vlm_folder), max_new_tokens=12))
    shipped = pickle.loads(pickle.dumps(fresh))
    assert shipped._model is None and VlmCaptioner.uses_model and shipped.batch_size == 4
    assert shipped(rows[:1]) == captioner(rows[:1])
    reshipped = pickle.loads(pickle.dumps(shipped))  # the loaded model stays behind
    assert reshipped._model is None and reshipped.params == fresh.params


def test_a_bad_model_folder_raises_on_first_use(tmp_path, rows):
    captioner = VlmCaptioner(CaptioningParams(model=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="no VLM folder"):
        captioner(rows[:1])


def test_the_tiny_vlm_is_built_once_and_atomically(vlm_folder):
    with pytest.raises(FileExistsError):
        build_tiny_vlm(vlm_folder, seed=0)
    assert not [p for p in vlm_folder.parent.iterdir() if p.name.startswith(".")]  # no staging
    assert (vlm_folder / "model.safetensors").is_file()
