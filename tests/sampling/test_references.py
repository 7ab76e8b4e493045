"""References for i2v / v2v: reading, frame selection per condition type, encoding, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from opensora_kedro.diffusion.rectified_flow import (
    INFERENCE_CONDITION_TYPES,
    condition_frames,
    sample_condition_types,
)
from opensora_kedro.models.vae.registry import build_vae
from opensora_kedro.sampling.references import (
    ReferenceReadError,
    build_condition,
    build_conditions,
    conditioned_span,
    encode_frames,
    load_references,
    read_reference,
    select_frames,
)
from opensora_kedro.video.codec import encode_image
from opensora_kedro.video.probe import ProbeError
from tests.conftest import gradient_frames, write_video


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae("tiny_vae").eval()


def numbered(count: int, size: int = 16) -> np.ndarray:
    """Frames whose pixels hold their own index, so a selection can be read back."""
    return np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None],
                           (count, size, size, 3)).copy()  # fmt: skip


def indices(frames: np.ndarray | None) -> list[int]:
    return [] if frames is None else frames[:, 0, 0, 0].tolist()


# --------------------------------------------------------------------------- reading


def test_read_image_and_video(tmp_path: Path) -> None:
    image = gradient_frames(1, 24, 40)[0]
    png = tmp_path / "ref.png"
    png.write_bytes(encode_image(image, ".png"))
    assert np.array_equal(read_reference(png), image[None])
    video = write_video(tmp_path / "ref.mp4", gradient_frames(6, 32, 48))
    assert read_reference(video).shape == (6, 32, 48, 3)
    both = load_references(f"{png} ; {video}")
    assert [len(f) for f in both] == [1, 6]
    assert load_references(image[None])[0] is not None


def test_read_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_reference(tmp_path / "missing.png")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(ReferenceReadError, match="junk.mp4") as info:
        read_reference(junk)
    assert isinstance(info.value, ProbeError) and info.value.path == str(junk)


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize("latent_frames", [5, 10, 33])
@pytest.mark.parametrize("cond_type", INFERENCE_CONDITION_TYPES)
def test_span_matches_condition_mask(cond_type: str, latent_frames: int) -> None:
    if cond_type in ("v2v_head", "v2v_tail") and latent_frames <= 9:
        with pytest.raises(ValueError, match="more than 9 latent frames"):
            conditioned_span(cond_type, latent_frames, causal=True)
        return
    head, tail = conditioned_span(cond_type, latent_frames, causal=True)
    expected = [*range(head), *range(latent_frames - tail, latent_frames)]
    mask = condition_frames(cond_type, latent_frames)
    assert sorted(set(expected)) == mask.nonzero().flatten().tolist()


def test_half_masks_and_training_types_unchanged() -> None:
    assert condition_frames("v2v_head_half", 5).nonzero().flatten().tolist() == [0, 1, 2]
    assert condition_frames("v2v_tail_half", 5).nonzero().flatten().tolist() == [2, 3, 4]
    assert int(condition_frames("v2v_head_half", 33).sum()) == 17  # 65 of 129 frames
    assert not condition_frames("v2v_tail_half", 1).any()
    with pytest.raises(ValueError, match="unknown condition type"):  # not a training type
        sample_condition_types(2, {"v2v_head_half": 1.0})


@pytest.mark.parametrize(
    ("cond_type", "num_frames", "ref_frames", "head", "tail"),
    [
        ("i2v_head", 17, 20, [0], []),
        ("i2v_tail", 17, 20, [], [19]),
        ("i2v_loop", 17, 20, [0], [19]),
        ("v2v_head", 37, 40, list(range(33)), []),
        ("v2v_tail", 37, 40, [], list(range(7, 40))),
        ("v2v_head_half", 17, 30, list(range(9)), []),  # first half of the 17-frame clip
        ("v2v_tail_half", 17, 30, [], list(range(8, 17))),  # its second half
    ],
)
def test_select_frames(vae, cond_type, num_frames, ref_frames, head, tail) -> None:
    got = select_frames([numbered(ref_frames)], cond_type, num_frames, vae)
    assert (indices(got[0]), indices(got[1])) == (head, tail)


def test_loop_takes_first_of_first_and_last_of_last(vae) -> None:
    first, last = numbered(5), numbered(12)
    head, tail = select_frames([first, last], "i2v_loop", 9, vae)
    assert indices(head) == [0] and indices(tail) == [11]


@pytest.mark.parametrize(
    ("cond_type", "num_frames", "ref_frames"),
    [("v2v_head", 37, 32), ("v2v_tail", 37, 20), ("v2v_head_half", 17, 8),
     ("v2v_tail_half", 17, 16)],
)  # fmt: skip
def test_reference_too_short(vae, cond_type, num_frames, ref_frames) -> None:
    with pytest.raises(ValueError, match="reference too short"):
        select_frames([numbered(ref_frames)], cond_type, num_frames, vae)


# --------------------------------------------------------------------------- conditions


def test_condition_needs_reference(vae) -> None:
    assert build_condition(vae, None, "t2v", 9, (32, 32)) is None
    with pytest.raises(ValueError, match="needs a reference"):
        build_condition(vae, None, "i2v_head", 9, (32, 32))
    with pytest.raises(ValueError, match="needs a reference"):
        build_conditions(vae, None, "v2v_head_half", 9, (32, 32), 1)
    with pytest.raises(ValueError, match="2 references for 1 prompts"):
        build_conditions(vae, [None, None], "i2v_head", 9, (32, 32), 1)


@pytest.mark.parametrize(
    ("cond_type", "frames", "pixels"),
    [("i2v_head", [0], [0]), ("i2v_tail", [2], [8]), ("v2v_head_half", [0, 1], [0, 4]),
     ("v2v_tail_half", [1, 2], [4, 8])],
)  # fmt: skip
def test_condition_holds_separately_encoded_reference(vae, cond_type, frames, pixels) -> None:
    ref = gradient_frames(9, 48, 48)  # resized-cropped to 32 x 32
    cond = build_condition(vae, ref, cond_type, 9, (32, 32))
    assert cond.shape == (1, 5, 3, 4, 4)
    mask = cond[0, 0, :, 0, 0]
    assert mask.nonzero().flatten().tolist() == frames
    expected = encode_frames(vae, ref[pixels[0] : pixels[-1] + 1], (32, 32))
    assert torch.equal(cond[:, 1:, frames], expected)
    assert not cond[:, 1:, [f for f in range(3) if f not in frames]].any()
