"""Local video storage: one file per video under the output directory, named by the server.

A name is `<owner>-<id>.mp4`: `owner` is a digest of the tenant that made it, `id` the server's
own random id. A client's header never names a file, and `find` returns a video only to keys of
the tenant that made it; the name alone carries the ownership, so it survives restarts without a
database (the digest is not a secret: knowing it does not let another tenant's key read it).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import uuid
from pathlib import Path

log = logging.getLogger("serve.io.local_store")

_NAME = re.compile(r"^([0-9a-f]{12})-([0-9a-f]{32})\.mp4$")


def owner_tag(tenant: str) -> str:
    return hashlib.sha256(f"videogen-tenant\0{tenant}".encode()).hexdigest()[:12]


class LocalStore:
    """Videos live at `<output_dir>/<owner>-<id>.mp4`; names are checked, never joined blindly."""

    def __init__(self, root: Path, scratch: Path | None = None) -> None:
        self.root = root.resolve()
        self.scratch = (scratch or self.root / ".tmp").resolve()

    def prepare(self) -> None:
        """Create the folders, and remove what a killed server left behind: partial videos and
        scratch files (nothing there can be finished once its process is gone)."""
        self.root.mkdir(parents=True, exist_ok=True)
        partial = list(self.root.glob(".*.partial"))
        for path in partial:
            path.unlink(missing_ok=True)
        leftovers = list(self.scratch.iterdir()) if self.scratch.is_dir() else []
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        if partial or leftovers:
            log.info(
                "removed leftovers of an earlier run",
                extra={"partial_videos": len(partial), "scratch_entries": len(leftovers)},
            )

    def new_path(self, tenant: str) -> Path:
        """Where a new video of `tenant` goes."""
        return self.root / f"{owner_tag(tenant)}-{uuid.uuid4().hex}.mp4"

    def find(self, name: str, tenant: str) -> Path | None:
        """The stored video called `name` if `tenant` made it; None for a missing, unsafe or
        other tenant's name (the caller answers all three alike)."""
        match = _NAME.match(name)
        if not match or match[1] != owner_tag(tenant):
            return None
        path = (self.root / name).resolve()
        if path.parent != self.root or not path.is_file():
            return None
        return path

    def low_on_space(self, floor: int) -> int | None:
        """The free bytes when fewer than `floor` remain (MIN_FREE_DISK_BYTES; 0 turns it off), else None."""
        if not floor:
            return None
        free = shutil.disk_usage(self.root if self.root.exists() else self.root.parent).free
        return free if free < floor else None
