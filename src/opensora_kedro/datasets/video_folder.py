"""A folder of media files as one Kedro dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from opensora_kedro.data.folder import VideoFolder
from opensora_kedro.datasets.folder_swap import replace_folder

# Written into every folder this dataset creates; a folder without it holds
# someone's own files and is never replaced.
MARKER = ".opensora_kedro_folder"


class VideoFolderDataset(AbstractDataset[dict[str, bytes], VideoFolder]):
    """Loads a folder as a :class:`VideoFolder` listing; saves ``{relative_name: bytes}``.

    Saving replaces the folder's whole content at once: the files are written to a
    sibling temporary folder that is then renamed into place, so a failed save
    leaves the previous content intact. A folder that this dataset did not create
    is refused rather than replaced.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._root = Path(path)
        self.metadata = metadata

    def load(self) -> VideoFolder:
        if not self._root.is_dir():
            raise DatasetError(f"video folder {self._root} does not exist")
        files = sorted(
            path.relative_to(self._root).as_posix()
            for path in self._root.rglob("*")
            if path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(self._root).parts)
        )
        return VideoFolder(root=self._root.resolve(), files=files)

    def save(self, data: dict[str, bytes]) -> None:
        root = self._root
        if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
            raise DatasetError(
                f"refusing to replace {root}: it holds files this dataset did not write "
                f"(no {MARKER} marker); point the catalog entry at another folder"
            )

        def fill(staging: Path) -> None:
            for name, content in data.items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            (staging / MARKER).touch()

        replace_folder(root, fill)

    def _exists(self) -> bool:
        return self._root.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root)}
