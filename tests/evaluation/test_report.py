"""Contact sheet, animated GIF and Markdown report."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from opensora_kedro.evaluation.frames import as_uint8_frames
from opensora_kedro.evaluation.report import (
    animated_gif,
    contact_sheet,
    markdown_report,
    markdown_table,
)
from opensora_kedro.video.render import ClipSpec, render_frames


def video(colour: str, direction: str, frames: int, size: tuple[int, int] = (48, 32)):
    return render_frames(ClipSpec("c", colour, "circle", direction, *size, 24.0, frames))


def test_contact_sheet_layout():
    clips = [video("red", "left", 9), video("blue", "up", 5, size=(40, 40))]
    labels = ["a red circle moving left\nmeasured: red (ok), left (ok)", "a blue circle"]
    sheet = contact_sheet(clips, labels, frames_per_clip=3, gap=4)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    # Cells are 48 wide and 40 high; the label band sits above each row of frames.
    assert sheet.shape[1] >= 3 * 48 + 2 * 4 and sheet.shape[0] > 2 * 40
    assert (sheet < 128).any(), "the labels are drawn in black"
    # The last frame of the first clip is the third cell of its row.
    frames = clips[0]
    rows = np.where((sheet[:, 2 * 52 : 2 * 52 + 48] != 255).any(axis=(1, 2)))[0]
    top = next(r for r in rows if np.array_equal(sheet[r, 104:152], frames[-1][0]))
    np.testing.assert_array_equal(sheet[top : top + 32, 104:152], frames[-1])
    Image.fromarray(sheet).save(io.BytesIO(), format="PNG")


def test_contact_sheet_takes_float_clips_and_checks_labels():
    tensor = torch.from_numpy(video("green", "down", 4)).permute(3, 0, 1, 2).float() / 127.5 - 1
    sheet = contact_sheet([tensor], frames_per_clip=4, gap=2)
    assert sheet.shape[1] == 4 * 48 + 3 * 2
    np.testing.assert_array_equal(as_uint8_frames(tensor), video("green", "down", 4))
    with pytest.raises(ValueError, match="labels"):
        contact_sheet([tensor], ["a", "b"])
    with pytest.raises(ValueError, match="no videos"):
        contact_sheet([], [])


def test_animated_gif_decodes_with_the_longest_clip_frame_count():
    clips = [video("red", "left", 9), video("blue", "right", 6), video("yellow", "up", 9)]
    data = animated_gif(clips, ["a red circle moving left", "blue", "yellow"], fps=10)
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.format == "GIF" and gif.n_frames == 9
        assert gif.info["duration"] == 100 and gif.info.get("loop") == 0
        width, height = gif.size
    assert width == 2 * 48 + 4 and height > 2 * 32  # a 2 x 2 grid with label bands


def test_markdown_report():
    metrics = {"eval_loss": 0.123456789, "prompt_following": {"colour_accuracy": 0.5},
               "samples": 3}  # fmt: skip
    losses = pd.DataFrame({"bucket": ["64px/9f/1:1"], "t": [0.5], "loss": [0.25]})
    text = markdown_report(metrics, {"Loss per bucket": losses, "Prompts": pd.DataFrame(
        {"prompt": ["a | b"], "ok": [True]})}, title="Stage 1")  # fmt: skip
    assert text.startswith("# Stage 1\n")
    assert (
        "| eval_loss | 0.12346 |" in text and "| prompt_following.colour_accuracy | 0.5 |" in text
    )
    assert "## Loss per bucket" in text and "| 64px/9f/1:1 | 0.5 | 0.25 |" in text
    assert "a \\| b" in text and "| True |" in text
    long = markdown_table(pd.DataFrame({"x": range(5)}), max_rows=2)
    assert long.count("\n| ") == 2 and "3 more rows" in long
