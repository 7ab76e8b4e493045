"""The largest batch each bucket trains with in a memory budget, found instead of guessed.

For every ``(resolution, num_frames)`` bucket of a stage's ``bucket_config`` the probe finds
the largest batch whose training step (forward, backward, optimizer step) stays within the
budget, by exponential then binary search. Whether a batch fits is asked of an injected
``trial(bucket, batch) -> peak bytes`` that raises ``torch.OutOfMemoryError`` when it does
not; on a GPU that is a real step (:mod:`.probe_trial`), in tests a memory model.

Open-Sora's rule that a bucket's batch size scales inversely with its token count (its
configs keep batch x tokens roughly constant) seeds and bounds the search: buckets are probed
in order of tokens per sample, each seeded at the previous bucket's tokens per step and bounded
by its batch (more tokens never fit more samples). When that bound itself fits, one more
sample is tried: if that fits too, the rule does not hold there, the search goes on past the
bound and the bucket is reported as a monotonicity violation, so every result is the exact
largest batch that fits whatever the rule says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import yaml

from opensora_kedro.data.bucket_config import BucketConfig
from opensora_kedro.params import BucketConfigTree

logger = logging.getLogger(__name__)

Trial = Callable[["ProbeBucket", int], int]


@dataclass(frozen=True)
class LatentGeometry:
    """How pixels become tokens: the VAE's compression and the model's patch."""

    spatial: int  # pixels per latent pixel, per side
    temporal: int  # frames per latent frame
    causal: bool  # the first frame is a latent frame of its own (4k+1 frames)
    patch: int  # latent pixels per token, per side
    channels: int  # latent channels
    text_tokens: int  # T5 tokens per sample

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a ``num_frames`` clip."""
        if self.causal:
            return (num_frames - 1) // self.temporal + 1
        return max(num_frames // self.temporal, 1)


@dataclass(frozen=True)
class ProbeBucket:
    """One bucket at its largest aspect ratio (the most tokens its batches can hold)."""

    resolution: str
    num_frames: int
    probability: Any  # as in the bucket_config: a float or a [keep, skip] pair
    configured_batch: int
    height: int
    width: int
    latent_shape: tuple[int, int, int, int]  # channels, frames, height, width
    image_tokens: int
    text_tokens: int

    @property
    def tokens(self) -> int:
        """Tokens per sample the model attends over (image + text)."""
        return self.image_tokens + self.text_tokens


@dataclass
class BucketResult:
    """What the probe found for one bucket."""

    resolution: str
    num_frames: int
    image_tokens: int
    tokens_per_sample: int
    configured_batch: int
    batch: int  # 0: not even one sample fits
    tokens_per_step: int
    peak_memory_gib: float | None
    trials: int
    monotonic: bool = True  # False: fits more than a bucket with fewer tokens


@dataclass
class ProbeSettings:
    """The search's limits."""

    budget_bytes: int
    max_batch: int = 1024


@dataclass
class _Fits:
    """``trial`` as a yes/no question, remembering each batch's peak memory."""

    trial: Trial
    bucket: ProbeBucket
    budget_bytes: int
    recover: Callable[[], None]
    peaks: dict[int, int] = field(default_factory=dict)

    def __call__(self, batch: int) -> bool:
        if batch in self.peaks:
            return self.peaks[batch] <= self.budget_bytes
        try:
            peak = int(self.trial(self.bucket, batch))
        except torch.OutOfMemoryError:
            logger.debug("%s batch %d: out of memory", _name(self.bucket), batch)
            self.peaks[batch] = self.budget_bytes + 1
            self.recover()
            return False
        self.peaks[batch] = peak
        return peak <= self.budget_bytes


def _name(bucket: ProbeBucket) -> str:
    return f"{bucket.resolution}/{bucket.num_frames}f"


def largest_fitting(fits: Callable[[int], bool], start: int, limit: int) -> int:
    """The largest ``b`` in ``[1, limit]`` with ``fits(b)`` (0 if none), for ``fits`` true up
    to some batch and false above it: from ``start``, double until a batch fails (or halve
    until one fits), then bisect between the last that fitted and the first that failed."""
    low, high = 0, limit + 1  # low fits (0 trivially), high does not (limit + 1 is beyond)
    batch = min(max(start, 1), limit)
    if fits(batch):
        low = batch
        while low < limit:
            batch = min(2 * low, limit)
            if not fits(batch):
                high = batch
                break
            low = batch
    else:
        high = batch
        while high > 1:
            batch = high // 2
            if fits(batch):
                low = batch
                break
            high = batch
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def probe_buckets(bucket_config: BucketConfigTree, geometry: LatentGeometry) -> list[ProbeBucket]:
    """Every bucket of a stage's (validated) ``bucket_config`` at its largest aspect ratio,
    fewest tokens first."""
    config = BucketConfig.from_tree(bucket_config)
    buckets = []
    for res in config.resolutions:
        largest = max(range(len(res.ratios)), key=lambda i: res.heights[i] * res.widths[i])
        height, width = res.heights[largest], res.widths[largest]
        lat_h, lat_w = height // geometry.spatial, width // geometry.spatial
        entries = bucket_config[res.name]
        for frames, size in zip(res.frames, res.batch_sizes, strict=True):
            lat_t = geometry.latent_frames(frames)
            tokens = lat_t * (lat_h // geometry.patch) * (lat_w // geometry.patch)
            buckets.append(ProbeBucket(
                resolution=res.name, num_frames=frames, probability=entries[frames][0],
                configured_batch=size, height=height, width=width,
                latent_shape=(geometry.channels, lat_t, lat_h, lat_w), image_tokens=tokens,
                text_tokens=geometry.text_tokens,
            ))  # fmt: skip
    return sorted(buckets, key=lambda b: (b.tokens, b.resolution, b.num_frames))


def _probe_one(
    bucket: ProbeBucket, fits: _Fits, previous: BucketResult | None, max_batch: int
) -> tuple[int, bool]:
    """``(largest batch, monotonic)`` of one bucket, seeded and bounded by ``previous``."""
    if previous is None or previous.batch == 0:
        return largest_fitting(fits, bucket.configured_batch, max_batch), True
    # Open-Sora's rule: the same tokens per step as the previous bucket, no more samples.
    seed = max(previous.tokens_per_step // bucket.tokens, 1)
    bound = min(previous.batch, max_batch)
    found = largest_fitting(fits, seed, bound)
    if found < bound or bound == max_batch or not fits(bound + 1):
        return found, True
    logger.warning(
        "%s fits more than %d samples although %s (fewer tokens) fits only %d: "
        "searching past the token rule", _name(bucket), bound,
        f"{previous.resolution}/{previous.num_frames}f", previous.batch,
    )  # fmt: skip
    return largest_fitting(fits, bound + 1, max_batch), False


def search_batch_sizes(
    buckets: list[ProbeBucket],
    trial: Trial,
    settings: ProbeSettings,
    recover: Callable[[], None] = lambda: None,
) -> list[BucketResult]:
    """The largest batch of every bucket (in ``buckets``' order: fewest tokens first).

    ``trial(bucket, batch)`` runs a training step and returns its peak memory in bytes, or
    raises ``torch.OutOfMemoryError``; ``recover()`` runs after each such error (on a GPU:
    free the failed step's tensors and empty the allocator's cache).
    """
    results: list[BucketResult] = []
    previous = None
    for bucket in buckets:
        fits = _Fits(trial, bucket, settings.budget_bytes, recover)
        batch, monotonic = _probe_one(bucket, fits, previous, settings.max_batch)
        peak = fits.peaks.get(batch) if batch else None
        result = BucketResult(
            resolution=bucket.resolution, num_frames=bucket.num_frames,
            image_tokens=bucket.image_tokens, tokens_per_sample=bucket.tokens,
            configured_batch=bucket.configured_batch, batch=batch,
            tokens_per_step=batch * bucket.tokens,
            peak_memory_gib=None if peak is None else round(peak / 2**30, 3),
            trials=len(fits.peaks), monotonic=monotonic,
        )  # fmt: skip
        logger.info(
            "%s: %d image + %d text tokens -> batch %d (configured %d), %s GiB, %d trials",
            _name(bucket), bucket.image_tokens, bucket.text_tokens, batch,
            bucket.configured_batch, result.peak_memory_gib, result.trials,
        )  # fmt: skip
        results.append(result)
        if batch:
            previous = result
    return results


def probed_bucket_config(buckets: list[ProbeBucket], results: list[BucketResult]) -> dict:
    """``{resolution: {num_frames: [probability, batch]}}`` of the buckets that fit, in the
    resolution and frame order of the original config."""
    found = {(r.resolution, r.num_frames): r.batch for r in results}
    config: dict[str, dict[int, list]] = {}
    for bucket in sorted(buckets, key=lambda b: (-b.height * b.width, b.num_frames)):
        batch = found[(bucket.resolution, bucket.num_frames)]
        if batch:
            probability = bucket.probability
            probability = (
                list(probability) if isinstance(probability, list | tuple) else probability
            )
            config.setdefault(bucket.resolution, {})[bucket.num_frames] = [probability, batch]
    return config


def bucket_config_yaml(stage: str, config: dict, header: list[str]) -> str:
    """A parameters file for an env folder: the stage's probed ``bucket_config`` (replacing
    the inherited one) and ``batch_size_scale: 1.0`` (the sizes are this device's already)."""
    if not config:
        raise ValueError("no bucket fits even one sample: nothing to write")
    body = {stage: {"batch_size_scale": 1.0, "bucket_config": {"_delete_": True, **config}}}
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=100)
    return "".join(f"# {line}\n" for line in header) + text


def report(results: list[BucketResult], device: dict[str, Any]) -> dict[str, Any]:
    """The probe's findings as one JSON-ready dict."""
    misfits = [f"{r.resolution}/{r.num_frames}" for r in results if not r.batch]
    violations = [f"{r.resolution}/{r.num_frames}" for r in results if not r.monotonic]
    return {"device": device, "buckets": [asdict(r) for r in results],
            "not_fitting": misfits, "monotonicity_violations": violations}  # fmt: skip


def report_markdown(results: list[BucketResult]) -> str:
    """The findings as a Markdown table (tokens per step and memory per bucket)."""
    lines = [
        "| bucket | image tokens | tokens/sample | configured batch | probed batch | "
        "tokens/step | peak memory | trials |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        memory = "-" if r.peak_memory_gib is None else f"{r.peak_memory_gib:.2f} GiB"
        flag = "" if r.monotonic else " (more than a smaller bucket)"
        lines.append(
            f"| {r.resolution} {r.num_frames}f | {r.image_tokens:,} | {r.tokens_per_sample:,} | "
            f"{r.configured_batch} | {r.batch}{flag} | {r.tokens_per_step:,} | {memory} | "
            f"{r.trials} |"
        )
    return "\n".join(lines) + "\n"
