"""Shot detection and splitting: long videos become one clip file per shot.

Cuts are found by PySceneDetect (``ContentDetector`` or ``AdaptiveDetector``) reading the video
through its PyAV backend, so decoding stays PyAV. Shots then follow Open-Sora v1.3's length rules
(:func:`apply_length_rules`) and are re-encoded into their own files, written atomically, so every
later stage (probe, hashes, motion, dataset, latent cache) works on files as before. A source that
is one shot within the rules is not re-encoded: its clip is the source file itself.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from opensora_kedro.files import write_atomic
from opensora_kedro.video.codec import encode_mp4
from opensora_kedro.video.decode import iter_frames

if TYPE_CHECKING:  # the schemas import torch, which this module does without
    from opensora_kedro.data.params import ShotParams

logger = logging.getLogger(__name__)

Range = tuple[int, int]  # frames [start, end) of a video, in decode order
SHOT_NAME = re.compile(r"shot-\d{3}\.mp4")


# The settings stored with each video's shots (``shot_settings``): a video keeps its cuts
# while they are unchanged.
SHOT_SETTINGS = ("detector", "threshold", "min_scene_frames", "min_seconds", "max_seconds", "crf")


def detector_threshold(params: ShotParams) -> float:
    """The threshold in use: ``threshold`` or the chosen detector's default (content 27.0,
    adaptive 3.0)."""
    if params.threshold is not None:
        return params.threshold
    return 27.0 if params.detector == "content" else 3.0


def _make_detector(params: ShotParams):
    """scenedetect's ``ContentDetector`` (a cut where the mean HSV change between two frames
    exceeds the threshold) or ``AdaptiveDetector`` (a cut where that change exceeds the
    threshold times its rolling average; Open-Sora v1.3's choice, and the one that also sees a
    cut that only swaps a small object), ``min_scene_frames`` apart at least."""
    from scenedetect import AdaptiveDetector, ContentDetector

    if params.detector == "content":
        return ContentDetector(
            threshold=detector_threshold(params), min_scene_len=params.min_scene_frames
        )
    return AdaptiveDetector(
        adaptive_threshold=detector_threshold(params), min_scene_len=params.min_scene_frames
    )


@functools.cache
def _recording_stream():
    """scenedetect's PyAV stream, noting the frame number of every frame it decodes (imported
    on first use: scenedetect pulls in OpenCV)."""
    from scenedetect.backends.pyav import VideoStreamAv

    class RecordingStream(VideoStreamAv):
        def __init__(self, path: str) -> None:
            # suppress_output keeps FFmpeg's process-wide log callback as it is (scenedetect
            # would turn FFmpeg's stderr logging on); safe as no threading mode is set.
            super().__init__(path, suppress_output=True)
            self.frame_numbers: list[int] = []
            self._recorded = None

        def read(self, decode: bool = True):
            result = super().read(decode)
            if result is not False and self._frame is not self._recorded:  # once per frame
                self._recorded = self._frame
                self.frame_numbers.append(self.position.frame_num)
            return result

    return RecordingStream


def detect_shots(path: str | os.PathLike, params: ShotParams) -> tuple[list[Range], float]:
    """Shot ranges ``[start, end)`` in decode order covering every decodable frame, and the fps.

    A video without a cut is one range over all its frames. scenedetect numbers frames by
    presentation time x nominal rate; its cuts are mapped back to decode indices, which differ
    for a variable-frame-rate video (whose fps is then the average rate).
    """
    from scenedetect import SceneManager

    video = _recording_stream()(str(path))
    manager = SceneManager()
    manager.add_detector(_make_detector(params))
    manager.detect_scenes(video)
    numbers = video.frame_numbers
    if not numbers:
        raise ValueError("no frame could be decoded")
    # start_in_scene: a video without a cut is one scene, not none.
    cuts = [start.frame_num for start, _ in manager.get_scene_list(start_in_scene=True)[1:]]
    bounds = [0, *(bisect.bisect_left(numbers, cut) for cut in cuts), len(numbers)]
    ranges = [(start, end) for start, end in itertools.pairwise(bounds) if start < end]
    fps = float(video.frame_rate)
    span = numbers[-1] - numbers[0]
    if span != len(numbers) - 1 and span > 0:  # variable frame rate: the average
        fps *= (len(numbers) - 1) / span
    return ranges, fps


def apply_length_rules(
    ranges: list[Range], fps: float, params: ShotParams
) -> tuple[list[Range], list[tuple[Range, str]]]:
    """Open-Sora v1.3's length rules (tools/scene_cut/cut.py, ``split_video``): a shot shorter
    than ``min_seconds`` is dropped (``shot_too_short``); a shot longer than ``max_seconds``
    keeps its first ``round(fps * max_seconds)`` frames and the rest is dropped
    (``shot_too_long``). Returns ``(kept, dropped)``, each in video order.

    Why truncate rather than split a long shot: that is what Open-Sora trains on, and the
    frames of one shot are near-duplicates of each other; nothing goes unrecorded either way,
    since the cut-off tail is listed with its reason.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    max_frames = None if params.max_seconds is None else round(fps * params.max_seconds)
    kept: list[Range] = []
    dropped: list[tuple[Range, str]] = []
    for start, end in ranges:
        if params.min_seconds is not None and (end - start) / fps < params.min_seconds:
            dropped.append(((start, end), "shot_too_short"))
        elif max_frames is not None and end - start > max_frames:
            kept.append((start, start + max_frames))
            dropped.append(((start + max_frames, end), "shot_too_long"))
        else:
            kept.append((start, end))
    return kept, dropped


def _even(frames: np.ndarray) -> np.ndarray:
    # H.264 yuv420p needs even sizes: an odd source loses its last row / column.
    height, width = frames.shape[1:3]
    return frames[:, : height - height % 2, : width - width % 2]


def _shot_frames(source: str | os.PathLike, ranges: list[Range]) -> Iterator[np.ndarray]:
    """The frames of each range of ``ranges`` (sorted, disjoint), in one decoding pass."""
    pending = iter(ranges)
    current = next(pending, None)
    if current is None:
        return
    shot = None  # filled in place: one copy of a shot in memory, not a list and its stack
    for index, frame in enumerate(iter_frames(source)):
        if index < current[0]:
            continue
        if shot is None:
            shot = np.empty((current[1] - current[0], *frame.shape), frame.dtype)
        shot[index - current[0]] = frame
        if index == current[1] - 1:
            yield shot
            shot, current = None, next(pending, None)
            if current is None:  # decode no further: past the last shot a file may be damaged
                return
    raise ValueError(f"frames {current[0]}-{current[1]} are past the decodable end")


def cut_shots(
    source: str | os.PathLike, shots: list[tuple[Range, Path]], fps: float, crf: int
) -> None:
    """Re-encode each ``(range, destination)`` of ``shots`` (sorted by range, disjoint) to
    H.264, atomically, decoding ``source`` once."""
    ranges = [shot_range for shot_range, _ in shots]
    for frames, (_, destination) in zip(_shot_frames(source, ranges), shots, strict=False):
        write_atomic(Path(destination), encode_mp4(_even(frames), fps, crf))


def cut_shot(
    source: str | os.PathLike,
    start: int,
    end: int,
    destination: str | os.PathLike,
    fps: float,
    crf: int,
) -> None:
    """Write frames ``[start, end)`` of ``source`` to ``destination`` as an H.264 MP4 at
    ``fps``, atomically (no partial file is ever visible at ``destination``)."""
    if not 0 <= start < end:
        raise ValueError(f"empty or negative frame range [{start}, {end})")
    cut_shots(source, [((start, end), Path(destination))], fps, crf)


def _drop_detail(shot_range: Range, reason: str, fps: float, params: ShotParams) -> str:
    seconds = (shot_range[1] - shot_range[0]) / fps
    if reason == "shot_too_short":
        return f"{seconds:.2f} s shot is under min_seconds {params.min_seconds}"
    if reason == "shot_too_long":
        return f"{seconds:.2f} s past max_seconds {params.max_seconds} of a longer shot"
    return f"frames {shot_range[0]} to {shot_range[1] - 1} did not decode"


def _still(path: str, fps: float | None) -> dict:
    """A still image (or one-frame video) is one shot of itself: nothing to detect or cut."""
    fps = float(fps or 0.0)
    end_s = 1 / fps if fps > 0 else 0.0  # NaN (a still's probed fps) is not > 0
    shot = {"clip_path": path, "start_frame": 0, "end_frame": 1, "start_s": 0.0, "end_s": end_s}
    return {"path": path, "shots": [shot], "dropped": []}


class ShotSplitter:
    """Split each video of a batch into its shots (the engine contract: picklable, no model).

    Rows hold ``path``, ``clip_stem`` (relative, unique per source, e.g. ``"sub/video"``),
    ``num_frames`` and ``fps``. Each result holds ``path``, ``shots`` (``clip_path``,
    ``start_frame``, ``end_frame``, ``start_s``, ``end_s``) and ``dropped`` (``start_frame``,
    ``end_frame``, ``reason``, ``detail``); or ``reason`` and ``detail`` for a failed video.
    Cut shots go to ``<output_dir>/<clip_stem>/shot-<k:03d>.mp4``, ``k`` the shot's index among
    those detected; a single shot within the length rules is the source file itself.
    """

    uses_model = False

    def __init__(self, params: ShotParams, output_dir: str | os.PathLike) -> None:
        self.params = params
        self.output_dir = Path(output_dir)

    def __call__(self, rows: list[dict]) -> list[dict]:
        """One result per row, in order; a broken video gives a reason, never an exception."""
        return [self._one(row) for row in rows]

    def _one(self, row: dict) -> dict:
        path, stated = row["path"], int(row["num_frames"])
        if stated <= 1:
            return _still(path, row.get("fps"))
        try:
            ranges, fps = detect_shots(path, self.params)
        except Exception as error:  # noqa: BLE001 - one broken file must not stop the run
            return _failure(path, "shot_detection_failed", error)
        kept, dropped = apply_length_rules(ranges, fps, self.params)
        decoded = ranges[-1][1]
        if decoded < stated:  # decoding gave up at a damaged stretch: record what is lost
            dropped.append(((decoded, stated), "undecodable_frames"))
        whole = len(ranges) == 1 and kept == ranges and decoded >= stated
        try:
            shots = self._clips(path, row["clip_stem"], ranges, kept, fps, whole)
        except Exception as error:  # noqa: BLE001
            return _failure(path, "cut_failed", error)
        logger.debug("%s: %d shot(s) detected, %d kept", path, len(ranges), len(kept))
        return {
            "path": path,
            "shots": shots,
            "dropped": [{"start_frame": start, "end_frame": end, "reason": reason,
                         "detail": _drop_detail((start, end), reason, fps, self.params)}
                        for (start, end), reason in dropped],
        }  # fmt: skip

    def _clips(
        self,
        path: str,
        clip_stem: str,
        ranges: list[Range],
        kept: list[Range],
        fps: float,
        whole: bool,
    ) -> list[dict]:
        """Cut ``kept`` into files (unless the ``whole`` source is its one shot) and describe
        them; stale shot files of an earlier run of this source are removed."""
        folder = self.output_dir / _relative(clip_stem)
        if whole:  # the source is one shot within the rules: it is its own clip
            planned = [(kept[0], path)]
        else:
            index = {start: k for k, (start, _) in enumerate(ranges)}
            planned = [(r, str(folder / f"shot-{index[r[0]]:03d}.mp4")) for r in kept]
            to_cut = [(r, Path(clip)) for r, clip in planned]
            try:
                cut_shots(path, to_cut, fps, self.params.crf)
            except BaseException:
                for _, clip in to_cut:  # no half-cut source: its finished shots go too
                    clip.unlink(missing_ok=True)
                raise
        _remove_stale(folder, {Path(clip).name for _, clip in planned})
        return [{"clip_path": clip, "start_frame": start, "end_frame": end,
                 "start_s": start / fps, "end_s": end / fps}
                for (start, end), clip in planned]  # fmt: skip


def _relative(clip_stem: str) -> PurePosixPath:
    stem = PurePosixPath(clip_stem)
    if stem.is_absolute() or ".." in stem.parts or not stem.parts:
        raise ValueError(f"clip_stem must be a relative path inside the output folder: {stem}")
    return stem


def _remove_stale(folder: Path, keep: set[str]) -> None:
    if not folder.is_dir():
        return
    for file in folder.iterdir():
        if SHOT_NAME.fullmatch(file.name) and file.name not in keep:
            logger.info("removing stale shot %s", file)
            file.unlink(missing_ok=True)


def _failure(path: str, reason: str, error: Exception) -> dict:
    logger.warning("%s: %s (%s: %s)", path, reason, type(error).__name__, error)
    return {"path": path, "reason": reason, "detail": f"{type(error).__name__}: {error}"}
