"""Prompt following on the demo domain: does a generated clip show the colour and motion asked?

Demo prompts follow :attr:`opensora_kedro.video.render.ClipSpec.caption`'s grammar,
``"a red circle moving left"`` / ``"an orange square staying still"``, optionally followed by
more text (the training suffix ``" 24 FPS, 5 motion score."``). Colour and direction are read
back from pixels by :mod:`opensora_kedro.video.measure`; shape is not measured.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from opensora_kedro.evaluation.frames import as_uint8_frames
from opensora_kedro.video.measure import dominant_colour, motion_direction
from opensora_kedro.video.render import COLOURS, DIRECTIONS, SHAPES, ClipSpec

logger = logging.getLogger(__name__)

_PROMPT = re.compile(
    r"^\s*an?\s+(?P<colour>[a-z]+)\s+(?P<shape>[a-z]+)\s+"
    r"(?:moving\s+(?P<direction>[a-z]+)|staying\s+still)(?![a-z])",
    re.IGNORECASE,
)
RESULT_COLUMNS = [
    "prompt", "parsed", "expected_colour", "measured_colour", "colour_ok",
    "expected_direction", "measured_direction", "direction_ok", "both_ok",
]  # fmt: skip


@dataclass(frozen=True)
class DemoPrompt:
    """What a demo prompt asks for."""

    colour: str
    shape: str
    direction: str  # one of DIRECTIONS ("static" for "staying still")

    @property
    def text(self) -> str:
        """The prompt in the training grammar (no suffix)."""
        return ClipSpec("", self.colour, self.shape, self.direction, 0, 0, 0.0, 0).caption


def parse_prompt(prompt: str) -> DemoPrompt | None:
    """The (colour, shape, direction) of a demo prompt, or ``None`` if it is not one.

    Case-insensitive; any text after the motion (a training suffix) is ignored.
    """
    match = _PROMPT.match(prompt)
    if match is None:
        return None
    colour, shape = match["colour"].lower(), match["shape"].lower()
    direction = (match["direction"] or "static").lower()
    if colour not in COLOURS or shape not in SHAPES or direction not in DIRECTIONS:
        return None
    if direction == "static" and match["direction"]:  # "moving static" is not the grammar
        return None
    return DemoPrompt(colour, shape, direction)


def _measure(frames: np.ndarray, prompt: str) -> dict[str, object]:
    expected = parse_prompt(prompt)
    colour, direction = dominant_colour(frames), motion_direction(frames)
    colour_ok = expected is not None and colour == expected.colour
    direction_ok = expected is not None and direction == expected.direction
    return {"prompt": prompt, "parsed": expected is not None,
            "expected_colour": expected.colour if expected else None, "measured_colour": colour,
            "colour_ok": colour_ok,
            "expected_direction": expected.direction if expected else None,
            "measured_direction": direction, "direction_ok": direction_ok,
            "both_ok": colour_ok and direction_ok}  # fmt: skip


def prompt_following(
    videos: Sequence[np.ndarray | torch.Tensor],
    prompts: Sequence[str],
    seen: Sequence[bool] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Measure colour and direction of each generated clip against its prompt.

    Args:
        videos: one clip per prompt; uint8 ``[T, H, W, 3]`` or float ``[C, T, H, W]`` in
            ``[-1, 1]`` (see :func:`as_uint8_frames`).
        prompts: the prompts the clips were generated from.
        seen: per prompt, whether its combination was trained on (adds a ``seen`` column and
            the per-group figures of :func:`summarize_following`).

    Returns:
        ``(per_sample, summary)``: one row per clip with :data:`RESULT_COLUMNS`, and
        ``colour_accuracy``, ``direction_accuracy``, ``both_accuracy`` (fractions over the
        parsed prompts; NaN if none parsed) and ``samples`` (parsed prompts). Prompts outside
        the grammar stay in the table with ``parsed`` False and count as neither right nor wrong.
    """
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} videos for {len(prompts)} prompts")
    rows = [_measure(as_uint8_frames(v), p) for v, p in zip(videos, prompts, strict=True)]
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if seen is not None:
        table["seen"] = np.asarray(seen, dtype=bool)
    if not table["parsed"].all():
        logger.warning("%d prompt(s) outside the demo grammar are not scored: %s",
                       int((~table["parsed"]).sum()),
                       table.loc[~table["parsed"], "prompt"].tolist()[:5])  # fmt: skip
    return table, summarize_following(table)


CHANCE = {"colour": 1 / len(COLOURS), "direction": 1 / len(DIRECTIONS)}


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for ``z = 1.96``); NaNs for no trials."""
    if trials == 0:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return max(0.0, centre - half), min(1.0, centre + half)


def _accuracies(scored: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    summary: dict[str, float] = {}
    for name in ("colour", "direction", "both"):
        hits, trials = int(scored[f"{name}_ok"].sum()), len(scored)
        low, high = wilson_interval(hits, trials)
        summary[f"{prefix}{name}_accuracy"] = hits / trials if trials else float("nan")
        summary[f"{prefix}{name}_ci_low"], summary[f"{prefix}{name}_ci_high"] = low, high
    summary[f"{prefix}samples"] = float(len(scored))
    return summary


def summarize_following(table: pd.DataFrame) -> dict[str, float]:
    """Accuracies over the parsed rows of a :func:`prompt_following` table, with 95% Wilson
    intervals (``*_ci_low`` / ``*_ci_high``); with a ``seen`` column also per group:
    ``unseen_*`` (combinations no training caption describes) and ``seen_*``."""
    scored = table[table["parsed"]]
    summary = _accuracies(scored)
    if "seen" in table:
        for group, rows in (
            ("unseen_", scored[~scored["seen"]]),
            ("seen_", scored[scored["seen"]]),
        ):
            summary.update(_accuracies(rows, group))
    summary.update({f"chance_{name}": value for name, value in CHANCE.items()})
    logger.info("prompt following on %d clips: colour %.2f, direction %.2f, both %.2f",
                len(scored), summary["colour_accuracy"], summary["direction_accuracy"],
                summary["both_accuracy"])  # fmt: skip
    return summary


def result_label(row: pd.Series | dict) -> str:
    """Two text lines for a picture: the prompt, and what was measured (``ok`` / ``WRONG``)."""

    def mark(ok: bool) -> str:
        return "ok" if ok else "WRONG"

    measured = (
        f"measured: {row['measured_colour']} ({mark(row['colour_ok'])}), "
        f"{row['measured_direction']} ({mark(row['direction_ok'])})"
    )
    return f"{row['prompt']}\n{measured}"


def all_demo_prompts() -> list[DemoPrompt]:
    """Every colour x shape x direction of the demo grammar, in palette order."""
    return [DemoPrompt(*combo) for combo in itertools.product(COLOURS, SHAPES, DIRECTIONS)]


def _pick(pool: list[DemoPrompt], counts: Counter) -> DemoPrompt:
    # Fewest uses of the colour plus the direction first: with a full pool both stay
    # balanced to within one; shape, then the seeded order, break ties.
    return min(
        pool,
        key=lambda p: (
            counts["colour", p.colour] + counts["direction", p.direction],
            counts["colour", p.colour],
            counts["shape", p.shape],
        ),
    )


def _balanced(combos: list[DemoPrompt], n: int) -> list[DemoPrompt]:
    """``n`` picks from ``combos`` in rounds (each combination once per round), colours and
    directions kept balanced greedily within each round."""
    counts: Counter = Counter()
    picked: list[DemoPrompt] = []
    pool: list[DemoPrompt] = []
    while combos and len(picked) < n:
        if not pool:
            pool = list(combos)
        choice = _pick(pool, counts)
        pool.remove(choice)
        counts.update([("colour", choice.colour), ("direction", choice.direction),
                       ("shape", choice.shape)])  # fmt: skip
        picked.append(choice)
    return picked


def evaluation_prompts(
    train_captions: Iterable[str], num_unseen: int, num_seen: int, seed: int = 0
) -> pd.DataFrame:
    """Demo prompts for the evaluation: ``num_unseen`` of combinations no training caption
    describes, then ``num_seen`` of combinations it trained on -> columns ``prompt``, ``seen``.

    Deterministic for a seed; within each group colours and directions are balanced and every
    combination is used once before any is used again (so 60 unseen prompts over 30 unseen
    combinations ask for each twice, with different seeds at generation). When there is no
    unseen combination (the demo data held none out) the unseen group is empty, with a warning.
    """
    seen = {parsed for caption in train_captions if (parsed := parse_prompt(str(caption)))}
    everything = all_demo_prompts()
    shuffled = [everything[i] for i in np.random.default_rng(seed).permutation(len(everything))]
    unseen = [p for p in shuffled if p not in seen]
    if num_unseen and not unseen:
        logger.warning("every demo combination occurs in the training captions: no unseen prompts")
    rows = [(p.text, False) for p in _balanced(unseen, num_unseen)]
    rows += [(p.text, True) for p in _balanced([p for p in shuffled if p in seen], num_seen)]
    return pd.DataFrame(rows, columns=["prompt", "seen"])
