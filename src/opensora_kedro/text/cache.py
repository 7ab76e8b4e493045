"""The text-embedding cache: caption embeddings in sharded safetensors files, read by caption hash.

Layout of a cache folder::

    shards/<name>.safetensors  one tensor "embeddings" [rows, *shape], rows in manifest order
    shards/<name>.json         its manifest: slot, byte size, sha256, caption hashes and keys
    current.json               which slot each role ("t5", "clip") of the last run used
    corrupt/                   damaged shards moved aside (kept for inspection)

A *slot* is one encoder at one ``max_length``; every embedding lives in a slot, under the key
``sha256(encoder_id, max_length, text)``. The manifests together are the index: per slot, a
map from ``caption_hash`` (sha256 of the text alone, the training table's column) to the key.
Shards are written once (temp file + rename; the manifest, written last, commits the shard)
and never rewritten, so a cache grows by appending files and a crash leaves at most an
orphaned shard without manifest, which is ignored (the writing: :mod:`.cache_writer`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open

from opensora_kedro.hashing import caption_hash, sha256_file

logger = logging.getLogger(__name__)

FORMAT = "opensora_kedro.text_embeddings/1"
TENSOR = "embeddings"
EMPTY_HASH = caption_hash("")  # the "null" caption of condition dropout
MAX_OPEN_SHARDS = 32
Verify = Literal["full", "size"]


class CorruptCacheError(RuntimeError):
    """A shard failed its checksum (or could not be read) when an embedding was requested."""


@dataclass(frozen=True)
class Slot:
    """One encoder at one max_length: the namespace of a set of cached embeddings."""

    role: str  # "t5" or "clip"
    encoder_id: str  # sha256 of the encoder's kind, output, weights fingerprint and dtype
    max_length: int
    shape: tuple[int, ...]  # of one embedding: T5 (max_length, d_model), CLIP (hidden,)
    dtype: str  # torch dtype name, e.g. "float32"
    source: str = ""  # where the encoder came from (informative; not part of the identity)

    @property
    def id(self) -> str:
        """Stable identity of the slot (encoder and max_length)."""
        return hashlib.sha256(f"{self.encoder_id}:{self.max_length}".encode()).hexdigest()[:32]

    def key(self, text: str) -> str:
        """The cache key of ``text`` in this slot."""
        payload = json.dumps([self.encoder_id, self.max_length, text], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (manifests, current.json)."""
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Slot:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "shape": tuple(data["shape"]), "max_length": int(data["max_length"])})


@dataclass
class CacheUpdate:
    """What one save appends: new embeddings of one slot, and/or bookkeeping.

    ``embeddings`` row i belongs to ``caption_hashes[i]`` / ``keys[i]``. ``select`` records the
    slot each role uses now (for readers); ``retire`` names damaged shards to move aside.
    """

    slot: Slot | None = None
    caption_hashes: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    embeddings: torch.Tensor | None = None
    select: dict[str, Slot] | None = None
    retire: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    shard: str
    row: int
    key: str


def distinct_captions(texts: Iterable[str], hashes: Iterable[str] | None = None) -> dict[str, str]:
    """``{caption_hash: text}`` of the distinct texts plus the empty string.

    ``hashes``, when given (the training table's ``caption_hash`` column), must match the
    texts: a stale column would file embeddings under the wrong caption.
    """
    texts = [str(text) for text in texts]
    captions = {caption_hash(text): text for text in texts}
    if hashes is not None:
        given = list(hashes)
        wrong = sum(caption_hash(t) != h for t, h in zip(texts, given, strict=True))
        if wrong:
            raise ValueError(f"{wrong} caption_hash value(s) are not the sha256 of their text")
    captions[EMPTY_HASH] = ""
    return captions


class EmbeddingCache:
    """Read access to a cache folder (see the module docstring); what training uses.

    ``verify="full"`` checks every shard's sha256 before its first embedding is served (and
    :meth:`verify` checks them up front); ``"size"`` trusts a shard whose size and header
    match its manifest. Damaged shards are reported and left out of the index, never read.
    """

    def __init__(self, root: str | Path, verify: Verify = "full") -> None:
        self.root = Path(root)
        self.verify_mode = verify
        self._manifests: dict[str, dict[str, Any]] = {}
        self._slots: dict[str, Slot] = {}
        self._current: dict[str, str] = {}
        self._damaged: dict[str, str] = {}
        self._verified: set[str] = set()
        self._index: dict[str, dict[str, _Entry]] = {}
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._load()

    @classmethod
    def open(cls, root: str | Path, verify: Verify = "full") -> EmbeddingCache:
        """Open the cache at ``root`` (an empty cache when the folder does not exist)."""
        return cls(root, verify)

    # -- index -----------------------------------------------------------------------------

    @property
    def shard_dir(self) -> Path:
        """The folder of shards and manifests."""
        return self.root / "shards"

    def _load(self) -> None:
        names = set()
        for manifest_path in sorted(self.shard_dir.glob("*.json")):
            name = manifest_path.stem
            names.add(name)
            try:
                manifest = json.loads(manifest_path.read_text())
                slot = Slot.from_dict(manifest["slot"])
                if manifest.get("format") != FORMAT or len(manifest["keys"]) != len(
                    manifest["caption_hashes"]
                ):
                    raise ValueError("unexpected manifest format")
            except (OSError, ValueError, KeyError, TypeError) as error:
                self._mark_damaged(name, f"unreadable manifest ({error})")
                continue
            self._manifests[name] = manifest
            self._slots.setdefault(slot.id, slot)
            self._check_size(name)
        orphans = [p.name for p in self.shard_dir.glob("*.safetensors") if p.stem not in names]
        if orphans:
            logger.info("ignoring %d shard(s) without manifest (interrupted writes)", len(orphans))
        self._load_current()
        self._rebuild_index()

    def _load_current(self) -> None:
        current = self.root / "current.json"
        if not current.is_file():
            return
        try:
            selection = {r: Slot.from_dict(d) for r, d in json.loads(current.read_text()).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            # Only the bookkeeping is lost: the next text_embedding run writes it again.
            logger.warning("unreadable %s (%s): no current slots", current, error)
            return
        for role, slot in selection.items():
            self._slots.setdefault(slot.id, slot)
            self._current[role] = slot.id

    def _check_size(self, name: str) -> None:
        path = self.shard_dir / f"{name}.safetensors"
        expected = self._manifests[name]["bytes"]
        if not path.is_file():
            self._mark_damaged(name, "shard file is missing")
        elif path.stat().st_size != expected:
            self._mark_damaged(name, f"{path.stat().st_size} bytes, manifest says {expected}")

    def _mark_damaged(self, name: str, reason: str) -> None:
        if name not in self._damaged:
            logger.warning("damaged text-embedding shard %s: %s; its entries count as missing",
                           self.shard_dir / name, reason)  # fmt: skip
        self._damaged[name] = reason
        self._handles.pop(name, None)

    def _rebuild_index(self) -> None:
        # Manifests sort by write time (names start with it): a later copy of an entry wins.
        self._index = {}
        for name, manifest in self._manifests.items():
            if name in self._damaged:
                continue
            entries = self._index.setdefault(Slot.from_dict(manifest["slot"]).id, {})
            for row, (hash_, key) in enumerate(
                zip(manifest["caption_hashes"], manifest["keys"], strict=True)
            ):
                entries[hash_] = _Entry(name, row, key)

    # -- queries ---------------------------------------------------------------------------

    @property
    def damaged(self) -> dict[str, str]:
        """Damaged shards found so far: ``{shard name: reason}``."""
        return dict(self._damaged)

    def slots(self) -> list[Slot]:
        """Every slot the cache knows (from manifests and the current selection)."""
        return list(self._slots.values())

    def slot(self, encoder: str | Slot) -> Slot:
        """The slot a role ("t5" / "clip") uses now, per the last text_embedding run."""
        if isinstance(encoder, Slot):
            return encoder
        if encoder not in self._current:
            raise KeyError(
                f"text-embedding cache {self.root} has no {encoder!r} embeddings yet: "
                "run `kedro run --pipeline=text_embedding`"
            )
        return self._slots[self._current[encoder]]

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._index.values())

    def cached_hashes(self, encoder: str | Slot) -> set[str]:
        """Caption hashes with an (undamaged) embedding in the slot."""
        return set(self._index.get(self.slot(encoder).id, {}))

    def missing(self, caption_hashes: Iterable[str], encoder: str | Slot) -> list[str]:
        """The hashes among ``caption_hashes`` without an embedding in the slot, in order."""
        entries = self._index.get(self.slot(encoder).id, {})
        return [h for h in caption_hashes if h not in entries]

    def verify(self, slots: Iterable[Slot | str] | None = None) -> dict[str, str]:
        """Check the sha256 of every not-yet-verified shard of ``slots`` (default: all).

        Returns the damaged shards found (``{name: reason}``); their entries leave the index.
        With ``verify="size"`` only sizes and headers were checked, at open.
        """
        wanted = None if slots is None else {self.slot(s).id for s in slots}
        found = {}
        for name, manifest in self._manifests.items():
            if name in self._damaged or name in self._verified:
                continue
            if wanted is None or Slot.from_dict(manifest["slot"]).id in wanted:
                reason = self._verify_shard(name)
                if reason:
                    found[name] = reason
        if found:
            self._rebuild_index()
        return found

    def _verify_shard(self, name: str) -> str | None:
        manifest = self._manifests[name]
        path = self.shard_dir / f"{name}.safetensors"
        try:
            if self.verify_mode == "full" and sha256_file(path) != manifest["sha256"]:
                raise ValueError("sha256 differs from the manifest")
            with safe_open(str(path), framework="pt") as handle:
                if handle.metadata().get("slot") != Slot.from_dict(manifest["slot"]).id:
                    raise ValueError("header names another slot")
                if handle.get_slice(TENSOR).get_shape()[0] != len(manifest["keys"]):
                    raise ValueError("row count differs from the manifest")
        except Exception as error:  # noqa: BLE001 - any failure to read means damaged
            self._mark_damaged(name, str(error))
            return str(error)
        self._verified.add(name)
        return None

    # -- reads -----------------------------------------------------------------------------

    def _handle(self, name: str) -> Any:
        if name not in self._verified and self._verify_shard(name):
            self._rebuild_index()
            raise CorruptCacheError(
                f"text-embedding shard {self.shard_dir / name} is damaged "
                f"({self._damaged[name]}): re-run `kedro run --pipeline=text_embedding`"
            )
        if name in self._handles:
            self._handles.move_to_end(name)
            return self._handles[name]
        handle = safe_open(str(self.shard_dir / f"{name}.safetensors"), framework="pt")
        self._handles[name] = handle
        while len(self._handles) > MAX_OPEN_SHARDS:
            self._handles.popitem(last=False)
        return handle

    def lookup(self, caption_hashes: Sequence[str], encoder: str | Slot = "t5") -> torch.Tensor:
        """Embeddings of ``caption_hashes``, stacked: T5 ``[B, max_length, d]``, CLIP ``[B, d]``.

        ``encoder`` is a role (its current slot) or a :class:`Slot`. Raises ``KeyError`` for
        a caption that has no embedding, :class:`CorruptCacheError` for a damaged shard.
        """
        slot = self.slot(encoder)
        entries = self._index.get(slot.id, {})
        rows = []
        for hash_ in caption_hashes:
            entry = entries.get(hash_)
            if entry is None:
                raise KeyError(
                    f"caption {hash_} has no {slot.role} embedding (max_length {slot.max_length}) "
                    f"in {self.root}: run `kedro run --pipeline=text_embedding`"
                )
            row = self._handle(entry.shard).get_slice(TENSOR)[entry.row : entry.row + 1]
            rows.append(row)
        if not rows:
            return torch.empty((0, *slot.shape), dtype=getattr(torch, slot.dtype))
        return torch.cat(rows)

    def get(self, caption_hash_: str, encoder: str | Slot = "t5") -> torch.Tensor:
        """One embedding: T5 ``[max_length, d]``, CLIP ``[d]``."""
        return self.lookup([caption_hash_], encoder)[0]

    def null(self, encoder: str | Slot = "t5") -> torch.Tensor:
        """The embedding of the empty caption (condition dropout's "null")."""
        return self.get(EMPTY_HASH, encoder)

    def __getstate__(self) -> dict[str, Any]:
        # Open safetensors handles do not pickle (DataLoader workers); they reopen lazily.
        return {**self.__dict__, "_handles": OrderedDict()}


@dataclass
class EmbeddingPlan:
    """What a run must compute: per role, the ``(caption_hash, text)`` pairs not cached."""

    slots: dict[str, Slot]
    todo: dict[str, list[tuple[str, str]]]
    hits: dict[str, int]
    retire: list[str]

    def metrics(self) -> dict[str, int]:
        """Counts for tracking: hits and misses per role, damaged shards."""
        counts = {"damaged_shards": len(self.retire)}
        for role in self.slots:
            counts[f"{role}_hits"] = self.hits[role]
            counts[f"{role}_misses"] = len(self.todo[role])
        return counts


def plan_updates(
    captions: Mapping[str, str], cache: EmbeddingCache, slots: Mapping[str, Slot]
) -> EmbeddingPlan:
    """Which of ``captions`` (``{caption_hash: text}``) each slot lacks.

    The shards of these slots are verified first, so a damaged one counts as missing (and is
    scheduled to be moved aside) rather than being trusted.
    """
    cache.verify(slots.values())
    todo, hits = {}, {}
    for role, slot in slots.items():
        missing = set(cache.missing(captions, slot))
        todo[role] = [(h, text) for h, text in captions.items() if h in missing]
        hits[role] = len(captions) - len(missing)
    plan = EmbeddingPlan(dict(slots), todo, hits, sorted(cache.damaged))
    logger.info("text-embedding cache %s: %s", cache.root, plan.metrics())
    return plan
