"""Local video storage: one file per request under the output directory."""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\.mp4$")


class LocalStore:
    """Videos live at `<output_dir>/<request-id>.mp4`; names are checked, never joined blindly."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, request_id: str) -> Path:
        name = f"{request_id}.mp4"
        if not _NAME.match(name):
            raise ValueError(f"unsafe video name {name!r}")
        return self.root / name

    def find(self, name: str) -> Path | None:
        """The stored video called `name`, or None for a missing or unsafe name."""
        if not _NAME.match(name):
            return None
        path = (self.root / name).resolve()
        if path.parent != self.root or not path.is_file():
            return None
        return path
