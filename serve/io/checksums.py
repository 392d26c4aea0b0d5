"""CRC32C of a file, in the form Cloud Storage reports it (base64 of the big-endian digest)."""

from __future__ import annotations

import base64
from pathlib import Path

import google_crc32c


def file_crc32c(path: Path) -> str:
    checksum = google_crc32c.Checksum()
    with path.open("rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode()
