"""An on-disk cache of VAE posteriors for diffusion training (``dataset.type: cached_video_text``).

Open-Sora's ``cached_video_text`` dataset reads latents encoded beforehand; here the cache fills
itself: the first time a clip is read in a bucket shape its pixels are encoded and the posterior
stored, later reads skip both decoding and encoding.

- One safetensors file per entry, named by the sha256 of a :class:`LatentKey` (the clip file and
  its size and mtime, the frame indices read, the target size and transform, and the VAE's
  fingerprint). It holds the *unscaled* posterior ``mean`` and ``std`` (only ``mean`` for a
  deterministic autoencoder), so every step still draws a fresh sample, as Open-Sora trains:
  :func:`sample_latent` equals ``vae.encode(video, sample=True, generator=g)`` bit for bit.
- Writes go to a rank-unique temporary file, then a hard link gives it its final name; a link
  never replaces a finished file, so ranks encoding the same clip cannot clash. A file that
  cannot be read, or whose checksum differs, is moved to ``corrupt/`` and re-encoded.
- The temporal window is fixed per (clip, bucket), the epoch-0 window, as Open-Sora's
  pre-encoded latents are; or, with ``fixed_windows=False``, drawn afresh every epoch as the
  uncached dataset does: each new window is a miss encoded once, so short clips soon hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import Dataset

from opensora_kedro.data.clip_dataset import ClipDataset
from opensora_kedro.data.sampler import SampleKey
from opensora_kedro.hashing import sha256_file
from opensora_kedro.models.vae.base import AutoencoderConfig, VideoAutoencoder

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the file layout or the key changes meaning


@dataclass(frozen=True)
class LatentKey:
    """Everything that determines a clip's latent."""

    path: str
    size: int
    mtime_ns: int
    frames: tuple[int, ...]
    height: int
    width: int
    transform: str
    vae_id: str

    def digest(self) -> str:
        """The entry's name: sha256 of the key's fields."""
        fields = {"format": CACHE_FORMAT, **dataclasses.asdict(self)}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass
class Moments:
    """A posterior: the unscaled ``mean`` and ``std`` (``None``: a deterministic autoencoder)."""

    mean: Tensor
    std: Tensor | None = None


def vae_fingerprint(
    vae: VideoAutoencoder, weights: str | os.PathLike, extra: Mapping[str, Any] | None = None
) -> str:
    """The VAE's identity: its class, config (scaling, tiling...), weights' sha256 and ``extra``
    (e.g. the training precision)."""
    identity = {
        "class": type(vae).__name__,
        "config": dataclasses.asdict(vae.config),
        "weights": sha256_file(weights),
        **(extra or {}),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def encode_moments(vae: VideoAutoencoder, video: Tensor) -> Moments:
    """The posterior ``vae.encode`` samples from, before scaling."""
    with torch.no_grad():
        # The base class's own split of encode; the public encode returns only the latent.
        z, posterior = vae._encode_unscaled(video, sample=False, generator=None)
    return Moments(z) if posterior is None else Moments(posterior.mean, posterior.std)


def sample_latent(
    moments: Moments,
    config: AutoencoderConfig,
    sample: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The scaled latent, exactly as ``vae.encode(video, sample, generator)`` computes it."""
    z = moments.mean
    if sample and moments.std is not None:
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        z = z + moments.std * eps
    return (z - config.shift_factor) * config.scaling_factor


def _checksum(tensors: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class LatentCache:
    """Posteriors on disk under ``root / <vae id> / <2 hex> / <digest>.safetensors``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def file(self, key: LatentKey) -> Path:
        """Where ``key``'s entry lives (whether or not it exists)."""
        digest = key.digest()
        return self.root / key.vae_id[:16] / digest[:2] / f"{digest}.safetensors"

    def get(self, key: LatentKey) -> Moments | None:
        """The stored posterior, or ``None`` when absent or unreadable (then set aside)."""
        file = self.file(key)
        if not file.is_file():
            return None
        try:
            with safe_open(str(file), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            problem = _check_entry(key, metadata, tensors)
        except Exception as error:  # whatever a damaged file raises, it is a miss
            problem = f"{type(error).__name__}: {error}"
        if problem:
            self._set_aside(file, problem)
            return None
        return Moments(tensors["mean"], tensors.get("std"))

    def put(self, key: LatentKey, moments: Moments) -> bool:
        """Store ``moments`` unless the entry exists; ``True`` when this call wrote it."""
        file = self.file(key)
        if file.exists():
            return False
        tensors = {"mean": moments.mean.detach().contiguous().cpu()}
        if moments.std is not None:
            tensors["std"] = moments.std.detach().contiguous().cpu()
        metadata = {"key": key.digest(), "sha256": _checksum(tensors), "clip": key.path}
        file.parent.mkdir(parents=True, exist_ok=True)
        temp = file.with_name(f".{file.name}.{socket.gethostname()}.{os.getpid()}."
                              f"{uuid.uuid4().hex}.tmp")  # fmt: skip
        try:
            save_file(tensors, str(temp), metadata=metadata)
            return _publish(temp, file)
        finally:
            temp.unlink(missing_ok=True)

    def _set_aside(self, file: Path, problem: str) -> None:
        aside = self.root / "corrupt" / f"{file.stem}.{uuid.uuid4().hex[:8]}.safetensors"
        logger.warning("latent cache entry %s is damaged (%s): moved to %s, re-encoding",
                       file, problem, aside)  # fmt: skip
        aside.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(file, aside)
        except FileNotFoundError:  # another reader set it aside first
            pass


def _check_entry(key: LatentKey, metadata: dict[str, str], tensors: dict[str, Tensor]) -> str:
    """What is wrong with a read entry ('' when nothing)."""
    if metadata.get("key") != key.digest():
        return "written for another key"
    std = tensors.get("std")
    if "mean" not in tensors or (std is not None and std.shape != tensors["mean"].shape):
        return f"unexpected tensors {sorted((n, tuple(t.shape)) for n, t in tensors.items())}"
    if metadata.get("sha256") != _checksum(tensors):
        return "checksum mismatch"
    return ""


def _publish(temp: Path, file: Path) -> bool:
    """Give ``temp`` the name ``file`` unless a finished ``file`` exists (never rewritten)."""
    try:
        os.link(temp, file)  # atomic, and fails rather than replace another rank's file
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: a rename, if still absent
        if file.exists():
            return False
        os.replace(temp, file)
        return True


class CachedClipDataset(Dataset):
    """A :class:`ClipDataset` that returns the cached posterior instead of pixels when it has
    one. Every item carries its ``latent_key``; a miss carries ``video`` for the trainer to
    encode and :meth:`LatentCache.put`. Windows are the epoch-0 ones unless ``fixed_windows``
    is off (see the module doc)."""

    def __init__(
        self, clips: ClipDataset, cache: LatentCache, vae_id: str, fixed_windows: bool = True
    ) -> None:
        self.clips, self.cache, self.vae_id = clips, cache, vae_id
        self.fixed_windows = fixed_windows

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        """Kept for the sampler protocol; fixed windows do not depend on the epoch."""
        self.clips.set_epoch(epoch)

    def latent_key(self, key: SampleKey) -> LatentKey:
        """The cache key of a sample key (its window's frames are part of it)."""
        path = os.path.abspath(self.clips.clip_path(key.index))
        stat = os.stat(path)
        return LatentKey(
            path=path,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            frames=tuple(int(i) for i in self.clips.frame_indices(key)),
            height=key.height,
            width=key.width,
            transform=self.clips.transform,
            vae_id=self.vae_id,
        )

    def __getitem__(self, key: SampleKey | str) -> dict[str, Any]:
        """``{"moments", "index", "key", "path", "latent_key"}`` on a hit, else the clip's
        item (``video``...) with ``latent_key``."""
        if isinstance(key, str):
            key = SampleKey.parse(key)
        if self.fixed_windows:
            key = dataclasses.replace(key, epoch=0)
        latent_key = self.latent_key(key)
        moments = self.cache.get(latent_key)
        if moments is None:
            return {**self.clips[key], "latent_key": latent_key}
        return {"moments": moments, "index": key.index, "key": key, "path": latent_key.path,
                "latent_key": latent_key}  # fmt: skip


def collate_cached(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """One-shape batch of hits and misses: ``index``, ``hit``/``miss`` (positions, long),
    ``video`` of the misses, ``mean``[/``std``] of the hits, and the lists ``key``, ``path``,
    ``latent_key``."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    hits = [item for item in batch if "moments" in item]
    misses = [item for item in batch if "moments" not in item]
    collated: dict[str, Any] = {
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.long),
        "hit": torch.tensor([i for i, item in enumerate(batch) if "moments" in item]).long(),
        "miss": torch.tensor([i for i, item in enumerate(batch) if "moments" not in item]).long(),
        **{name: [item[name] for item in batch] for name in ("key", "path", "latent_key")},
    }
    if misses:
        collated["video"] = torch.stack([item["video"] for item in misses])
    if hits:
        collated["mean"] = torch.stack([item["moments"].mean for item in hits])
        if all(item["moments"].std is not None for item in hits):
            collated["std"] = torch.stack([item["moments"].std for item in hits])
    return collated


def store_misses(cache: LatentCache, batch: dict[str, Any], encoded: Moments) -> int:
    """Write the encoded misses of ``batch``; returns how many this rank wrote."""
    written = 0
    for row, position in enumerate(batch["miss"].tolist()):
        std = None if encoded.std is None else encoded.std[row]
        written += cache.put(batch["latent_key"][position], Moments(encoded.mean[row], std))
    return written


def merge_moments(batch: dict[str, Any], encoded: Moments | None) -> Moments:
    """The whole batch's posterior, in batch order, from its hits and its ``encoded`` misses."""
    parts = [(batch["hit"], Moments(batch["mean"], batch.get("std")))] if "mean" in batch else []
    if encoded is not None:
        parts.append((batch["miss"], encoded))
    first = parts[0][1]
    size = len(batch["index"])
    mean = first.mean.new_empty((size, *first.mean.shape[1:]))
    has_std = all(part.std is not None for _, part in parts)
    std = torch.empty_like(mean) if has_std else None
    for positions, part in parts:
        mean[positions] = part.mean.to(mean.dtype)
        if std is not None:
            std[positions] = part.std.to(std.dtype)
    return Moments(mean, std)
