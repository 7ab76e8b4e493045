"""Pictures and text of an evaluation: a contact sheet, an animated GIF and a Markdown report.

Text is drawn with Pillow's built-in default font, so nothing has to be installed or found on
the machine. Videos are anything :func:`as_uint8_frames` takes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont

from opensora_kedro.evaluation.frames import as_uint8_frames

Video = np.ndarray | torch.Tensor
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
FONT_SIZE = 11
PAD = 3  # pixels around text


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text_size(text: str, font: Any) -> tuple[int, int]:
    """Width and line height (for any text in the font) of one line."""
    left, _, right, _ = font.getbbox(text or " ")
    _, top, _, bottom = font.getbbox("Ayg|")
    return int(math.ceil(right - left)), int(math.ceil(bottom)) + 2


def _clips(videos: Sequence[Video], labels: Sequence[str] | None) -> tuple[list, list[str]]:
    if not videos:
        raise ValueError("no videos to draw")
    labels = [""] * len(videos) if labels is None else [str(label) for label in labels]
    if len(labels) != len(videos):
        raise ValueError(f"{len(labels)} labels for {len(videos)} videos")
    return [as_uint8_frames(video) for video in videos], labels


def _paste(canvas: np.ndarray, image: np.ndarray, top: int, left: int) -> None:
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image


def _draw_lines(image: Image.Image, lines: Sequence[str], top: int, left: int, font: Any) -> None:
    draw = ImageDraw.Draw(image)
    line_height = _text_size("", font)[1]
    for number, line in enumerate(lines):
        draw.text((left, top + number * line_height), line, fill=BLACK, font=font)


def contact_sheet(
    videos: Sequence[Video],
    labels: Sequence[str] | None = None,
    frames_per_clip: int = 4,
    gap: int = 4,
    font_size: int = FONT_SIZE,
) -> np.ndarray:
    """A white sheet, one row per clip: its label (lines split at ``\\n``) above a few frames.

    Frames are evenly spaced over each clip; clips of different sizes sit top-left in cells of
    the largest size. Returns ``uint8 [H, W, 3]``, ready to save as PNG.
    """
    clips, labels = _clips(videos, labels)
    font = _font(font_size)
    cell_h = max(c.shape[1] for c in clips)
    cell_w = max(c.shape[2] for c in clips)
    line_h = _text_size("", font)[1]
    text_h = max(len(label.split("\n")) for label in labels) * line_h + 2 * PAD
    text_w = max(_text_size(line, font)[0] for label in labels for line in label.split("\n"))
    width = max(frames_per_clip * (cell_w + gap) - gap, text_w + 2 * PAD)
    row_h = text_h + cell_h + gap
    canvas = np.full((len(clips) * row_h - gap, width, 3), 255, np.uint8)
    for row, clip in enumerate(clips):
        count = min(frames_per_clip, len(clip))
        for column, index in enumerate(np.linspace(0, len(clip) - 1, count).round().astype(int)):
            _paste(canvas, clip[index], row * row_h + text_h, column * (cell_w + gap))
    image = Image.fromarray(canvas)
    for row, label in enumerate(labels):
        _draw_lines(image, label.split("\n"), row * row_h + PAD, PAD, font)
    return np.asarray(image).copy()


def _wrap(text: str, width: int, font: Any) -> list[str]:
    """Greedy word wrap of each ``\\n`` line to ``width`` pixels (a long word keeps its line)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and _text_size(candidate, font)[0] > width:
                lines.append(line)
                candidate = word
            line = candidate
        lines.append(line)
    return lines


def animated_gif(
    videos: Sequence[Video],
    labels: Sequence[str] | None = None,
    fps: float = 8.0,
    columns: int | None = None,
    gap: int = 4,
    font_size: int = FONT_SIZE,
) -> bytes:
    """An endlessly looping GIF of the clips side by side, each with its label wrapped below.

    The GIF has as many frames as the longest clip; shorter clips hold their last frame.
    ``columns`` defaults to a near-square grid. (GIF writers merge identical consecutive
    frames, so a clip of nothing but still frames decodes with fewer frames.)
    """
    clips, labels = _clips(videos, labels)
    font = _font(font_size)
    columns = columns or math.ceil(math.sqrt(len(clips)))
    rows = math.ceil(len(clips) / columns)
    cell_h = max(c.shape[1] for c in clips)
    cell_w = max(c.shape[2] for c in clips)
    wrapped = [_wrap(label, cell_w - 2 * PAD, font) if label else [] for label in labels]
    text_h = max(len(lines) for lines in wrapped) * _text_size("", font)[1]
    text_h += 2 * PAD if text_h else 0
    tile_h, tile_w = cell_h + text_h + gap, cell_w + gap
    background = Image.new("RGB", (columns * tile_w - gap, rows * tile_h - gap), WHITE)
    for number, lines in enumerate(wrapped):
        top, left = (number // columns) * tile_h + cell_h + PAD, (number % columns) * tile_w
        _draw_lines(background, lines, top, left + PAD, font)
    base = np.asarray(background)
    images = []
    for t in range(max(len(c) for c in clips)):
        canvas = base.copy()
        for number, clip in enumerate(clips):
            top, left = (number // columns) * tile_h, (number % columns) * tile_w
            _paste(canvas, clip[min(t, len(clip) - 1)], top, left)
        images.append(Image.fromarray(canvas))
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, round(1000 / fps)), loop=0)  # fmt: skip
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else f"{value:.5g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, max_rows: int = 50) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (floats to 5 significant digits)."""
    lines = ["| " + " | ".join(_cell(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]  # fmt: skip
    for row in frame.head(max_rows).itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n({len(frame) - max_rows} more rows not shown)")
    return "\n".join(lines)


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def markdown_report(
    metrics: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    title: str = "Evaluation",
    max_rows: int = 50,
) -> str:
    """A Markdown report: a metric/value table (nested dicts flattened to ``a.b``), then one
    section per table."""
    metric_frame = pd.DataFrame(list(_flatten(metrics).items()), columns=["metric", "value"])
    parts = [f"# {title}", "## Metrics", markdown_table(metric_frame, max_rows=len(metric_frame))]
    for name, frame in tables.items():
        parts += [f"## {name}", markdown_table(frame, max_rows)]
    return "\n\n".join(parts) + "\n"
