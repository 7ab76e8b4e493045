"""Atomic, verifiable training checkpoints (brief §7.4-§7.5, DESIGN "Data contracts").

Layout under ``root``::

    step-00000100/
        model.safetensors   model.json      # flat state_dict: safetensors keys = its keys
        ema.safetensors     ema.json
        optimizer.safetensors optimizer.json
        lr_scheduler.json   sampler.json    running.json   # no tensors: JSON only
        rng.safetensors     rng.json
        manifest.json                       # written last: parts, file sizes, sha256

Each part is written by :mod:`opensora_kedro.training.state_io`. A save writes everything
into ``.tmp-step-00000100-<random>/``, fsyncs the files, the manifest and the directory, and
only then renames it to ``step-00000100`` and fsyncs ``root``. A crash at any point leaves
either the old set of checkpoints or the new one; hidden ``.tmp-*`` / ``.old-*`` leftovers are
never picked and are removed by the next successful save. A checkpoint counts only if its
manifest verifies, so a truncated or altered file makes :meth:`CheckpointManager.latest` fall
back to the previous step with a warning.

One process (rank 0) writes to a ``root`` at a time; a second writer's temporary directory
would be removed as stale.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from opensora_kedro.config.errors import UserConfigError
from opensora_kedro.hashing import sha256_file as _sha256
from opensora_kedro.training.state_io import load_state, save_state

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "opensora_kedro.checkpoint"
MANIFEST_VERSION = 1
TEMP_PREFIX = ".tmp-step-"
TRASH_PREFIX = ".old-step-"
_FINAL_NAME = re.compile(r"^step-(\d{8,})$")
_PART_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class CheckpointError(RuntimeError):
    """A checkpoint directory is incomplete, corrupt or not a checkpoint."""


class CheckpointManager:
    """Saves, lists, verifies, loads and prunes the ``step-XXXXXXXX`` checkpoints in ``root``.

    ``keep_n_latest`` complete checkpoints survive each save (``<= 0`` keeps all, as in
    Open-Sora); the one just saved is always kept, even if older steps exist above it.
    """

    def __init__(self, root: Path | str, keep_n_latest: int) -> None:
        self.root = Path(root)
        self.keep_n_latest = int(keep_n_latest)
        # Files already hashed, by checkpoint: (name, size, mtime, inode) for each, so that
        # ``load(latest())`` does not hash a large checkpoint twice.
        self._verified: dict[Path, frozenset] = {}

    @staticmethod
    def path_for(root: Path, step: int) -> Path:
        """The directory a checkpoint of ``step`` has once complete."""
        return Path(root) / f"step-{step:08d}"

    @staticmethod
    def step_of(path: Path) -> int:
        """The step of a ``step-XXXXXXXX`` directory; ``ValueError`` for other names."""
        match = _FINAL_NAME.match(Path(path).name)
        if match is None:
            raise ValueError(f"{path} is not a checkpoint directory name")
        return int(match.group(1))

    def save(self, step: int, parts: Mapping[str, Any]) -> Path:
        """Write ``parts`` (name -> nested state) as the checkpoint of ``step``, atomically.

        An existing checkpoint of the same step is replaced. Returns the final directory.
        """
        step = operator.index(step)  # numpy ints are fine, floats are not
        _check_save_arguments(step, parts)
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            _fsync(self.root.parent)  # the new root's own entry must survive a crash too
        temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{step:08d}-", dir=self.root))
        try:
            manifest = _write_parts(temp, step, parts)
            _write_json_durably(temp / MANIFEST_NAME, manifest)
            _fsync(temp)
            final = self._publish(temp, step)
        except BaseException:
            # Also on KeyboardInterrupt: the partial directory is useless either way.
            shutil.rmtree(temp, ignore_errors=True)
            raise
        logger.info("Saved checkpoint %s (%s)", final, ", ".join(parts))
        self._prune(keep=final)
        self._remove_leftovers()
        return final

    def list(self) -> list[Path]:
        """Checkpoints that have a manifest, oldest step first (not verified: see latest)."""
        return [path for path in self._final_dirs() if (path / MANIFEST_NAME).is_file()]

    def latest(self) -> Path | None:
        """The highest-step checkpoint whose manifest verifies, or None.

        Directories that fail verification are skipped with a warning.
        """
        for path in reversed(self._final_dirs()):
            try:
                self.verify(path)
            except CheckpointError as error:
                logger.warning("Ignoring checkpoint %s: %s", path, error)
                continue
            return path
        return None

    def verify(self, path: Path, parts: Sequence[str] | None = None) -> dict[str, Any]:
        """Check ``path`` against its manifest (sizes and sha256) and return the manifest.

        Only the files of ``parts`` are checked when given. Raises :class:`CheckpointError`.
        """
        path = Path(path)
        manifest = _read_manifest(path)
        names = list(manifest["parts"]) if parts is None else list(parts)
        unknown = [name for name in names if name not in manifest["parts"]]
        if unknown:
            available = list(manifest["parts"])
            raise CheckpointError(f"no part(s) {unknown} in {path}; it has {available}")
        files = [file for name in names for file in manifest["parts"][name]]
        signature = _signature(path, files)
        if signature <= self._verified.get(path, frozenset()):
            return manifest
        for file in files:
            _check_file(path / file, manifest["files"][file])
        self._verified[path] = self._verified.get(path, frozenset()) | signature
        return manifest

    def load(
        self, path: Path, parts: Sequence[str] | None = None, device: str | torch.device = "cpu"
    ) -> dict[str, Any]:
        """Verify ``path`` and return ``{part: state}`` for ``parts`` (default: all of them)."""
        path = Path(path)
        manifest = self.verify(path, parts)
        names = list(manifest["parts"]) if parts is None else list(parts)
        logger.info("Loading checkpoint %s (%s)", path, ", ".join(names))
        return {name: load_state(path, name, device=device) for name in names}

    def _final_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _FINAL_NAME.match(p.name) and p.is_dir()]
        return sorted(found, key=self.step_of)

    def _publish(self, temp: Path, step: int) -> Path:
        """Rename ``temp`` to the final name, moving an existing same-step checkpoint aside."""
        final = self.path_for(self.root, step)
        old = None
        if final.exists():
            # rename() cannot replace a non-empty directory: move the old one out of the
            # way first. A crash between the two renames loses this step (latest() then
            # returns the step before), never mixes two saves.
            old = self._trash_path(step)
            os.rename(final, old)
        try:
            os.rename(temp, final)
        except BaseException:
            if old is not None:
                os.rename(old, final)
            raise
        _fsync(self.root)
        self._verified.pop(final, None)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _trash_path(self, step: int) -> Path:
        return self.root / f"{TRASH_PREFIX}{step:08d}-{uuid.uuid4().hex[:8]}"

    def _prune(self, keep: Path) -> None:
        if self.keep_n_latest <= 0:
            return
        newest_first = list(reversed(self.list()))
        kept = set(newest_first[: self.keep_n_latest]) | {keep}
        for path in newest_first:
            if path not in kept:
                self._remove(path)

    def _remove(self, path: Path) -> None:
        # Rename first so that a crash mid-delete leaves a hidden leftover, not a
        # half-deleted directory under a checkpoint name.
        trash = self._trash_path(self.step_of(path))
        os.rename(path, trash)
        self._verified.pop(path, None)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("Pruned checkpoint %s (keep_n_latest=%d)", path, self.keep_n_latest)

    def _remove_leftovers(self) -> None:
        for path in self.root.iterdir():
            if path.is_dir() and path.name.startswith((TEMP_PREFIX, TRASH_PREFIX)):
                logger.warning("Removing %s left by an interrupted save or prune", path)
                shutil.rmtree(path, ignore_errors=True)


def _check_save_arguments(step: int, parts: Mapping[str, Any]) -> None:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not parts:
        raise ValueError("a checkpoint needs at least one part")
    for name in parts:
        if not isinstance(name, str) or not _PART_NAME.match(name) or name == "manifest":
            raise ValueError(f"invalid part name {name!r}")


def _write_parts(directory: Path, step: int, parts: Mapping[str, Any]) -> dict[str, Any]:
    """Write and fsync every part; return the manifest describing the files."""
    part_files: dict[str, list[str]] = {}
    files: dict[str, dict[str, Any]] = {}
    for name, state in parts.items():
        written = save_state(state, directory, name)
        for path in written:
            _fsync(path)
            files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        part_files[name] = [path.name for path in written]
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "step": step,
        "parts": part_files,
        "files": files,
    }


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CheckpointError(f"{manifest_path} is missing (incomplete save)") from error
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{manifest_path} is unreadable: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{manifest_path} is not a {MANIFEST_FORMAT} manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise CheckpointError(f"{manifest_path} has unsupported version {manifest.get('version')}")
    if manifest.get("step") != CheckpointManager.step_of(path):
        raise CheckpointError(f"{manifest_path} says step {manifest.get('step')}, not {path.name}")
    parts, files = manifest.get("parts"), manifest.get("files")
    if not isinstance(parts, dict) or not isinstance(files, dict):
        raise CheckpointError(f"{manifest_path} lacks its parts or files")
    for part_files in parts.values():
        if not isinstance(part_files, list):
            raise CheckpointError(f"{manifest_path} has a malformed parts entry")
        for file in part_files:
            # Plain names only, so a tampered manifest cannot point outside the checkpoint.
            valid = isinstance(file, str) and Path(file).name == file
            if not valid or not isinstance(files.get(file), dict):
                raise CheckpointError(f"{manifest_path} lists an invalid file {file!r}")
    return manifest


def _check_file(path: Path, expected: dict[str, Any]) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError as error:
        raise CheckpointError(f"{path.name} is missing") from error
    if size != expected.get("size"):
        raise CheckpointError(f"{path.name} has {size} bytes, manifest says {expected.get('size')}")
    if _sha256(path) != expected.get("sha256"):
        raise CheckpointError(f"{path.name} does not match its sha256 in the manifest")


def _signature(path: Path, files: list[str]) -> frozenset:
    """Identity of the files as they are now; a rewrite changes size, mtime or inode."""
    entries = []
    for file in [MANIFEST_NAME, *files]:
        try:
            stat = (path / file).stat()
        except FileNotFoundError:
            return frozenset({("missing", file)})
        entries.append((file, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return frozenset(entries)


def _write_json_durably(path: Path, document: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes its entries durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class TrainingDataChangedError(UserConfigError):
    """A resume would continue on another training table than the checkpoint's."""

    def __init__(self, checkpoint: Path, saved: str, current: str) -> None:
        super().__init__(
            "the training table changed since the checkpoint this run would resume from",
            [
                f"{checkpoint}: table {saved[:12]}, now {current[:12]}; its sampler position "
                "and epoch would point into a different table",
                "start afresh: --params <group>.resume=false (earlier checkpoints are moved "
                "aside, not deleted)",
                "or continue anyway: --params <group>.force_resume=true",
            ],
        )


class CheckpointModelMismatchError(UserConfigError):
    """A resume would load a checkpoint of another model than the configured one."""

    def __init__(self, checkpoint: Path, differences: list[str]) -> None:
        super().__init__(
            "the checkpoint this run would resume from holds another model than the configured one",
            [
                f"{checkpoint}: " + "; ".join(differences[:5])
                + (f"; and {len(differences) - 5} more" if len(differences) > 5 else ""),
                "the model's parameters changed since that run: start afresh with "
                "--params <group>.resume=false (earlier checkpoints are moved aside, not deleted)",
            ],
        )  # fmt: skip


def check_model_fits(checkpoint: Path, saved: dict, own: dict) -> None:
    """Raise :class:`CheckpointModelMismatchError` when ``saved`` does not fit ``own``."""
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    reshaped = [
        f"{key} {tuple(saved[key].shape)} -> {tuple(own[key].shape)}"
        for key in sorted(set(saved) & set(own))
        if saved[key].shape != own[key].shape
    ]
    differences = [
        *(f"{len(keys)} {what} tensor(s), e.g. {keys[0]}"
          for keys, what in ((missing, "missing"), (unexpected, "unexpected")) if keys),
        *reshaped,
    ]  # fmt: skip
    if differences:
        raise CheckpointModelMismatchError(checkpoint, differences)
