"""A listing of the media files of a folder (what the raw-videos dataset loads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VideoFolder:
    """The files under ``root`` (relative POSIX paths, sorted, hidden files excluded)."""

    root: Path
    files: list[str] = field(default_factory=list)

    def path(self, relative: str) -> Path:
        """Absolute path of one listed file."""
        return self.root / relative
