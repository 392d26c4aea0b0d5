"""Uploaded input files: `POST /uploads` turns a local file into a reference, `upload://<id>`,
that a request names as `video_in`, `audio_in` or `image`.

An upload belongs to its tenant (its name carries the tenant's tag, as a video's does; another
tenant's key gets "no such upload"), has a kind sniffed from its first bytes (never from the
client's filename or content type), and expires (UPLOAD_TTL_SECONDS): locally it is deleted by the
sweep each new upload runs; in a bucket, an expired object is refused on read and the bucket's
lifecycle rule deletes it. Uploads are inputs only: nothing serves them back.

Two stores: a local folder (ENVIRONMENT=local; UPLOAD_DIR) and a Cloud Storage bucket
(UPLOAD_BUCKET, objects `uploads/<tenant tag>/<id>`), the one every VM and worker can read.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from serve.errors import ServeError, invalid_field
from serve.io.local_store import owner_tag

log = logging.getLogger("serve.io.uploads")

SCHEME = "upload://"
_ID = re.compile(r"[0-9a-f]{32}")
HEAD_BYTES = 64

# Which kinds each input field takes (a video's sound track is speech too).
FIELD_KINDS = {"video_in": ("video",), "audio_in": ("audio", "video"), "image": ("image",)}


def now() -> datetime:
    return datetime.now(UTC)


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, content type) from a file's first bytes, or None for anything else."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio", "audio/mp4"
        if brand == b"qt  ":
            return "video", "video/quicktime"
        return "video", "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ("video", "video/webm") if b"webm" in head else ("video", "video/x-matroska")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio", "audio/wav"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image", "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video", "video/x-msvideo"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "audio", "audio/mpeg"
    if head.startswith(b"fLaC"):
        return "audio", "audio/flac"
    if head.startswith(b"OggS"):
        return "audio", "audio/ogg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "image/jpeg"
    return None


@dataclass(frozen=True)
class Upload:
    upload_id: str
    kind: str
    content_type: str
    bytes: int
    created_at: datetime
    expires_at: datetime

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.upload_id}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(url=self.url, created_at=self.created_at.isoformat(), expires_at=self.expires_at.isoformat())
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Upload:
        return cls(
            upload_id=data["upload_id"],
            kind=data["kind"],
            content_type=data["content_type"],
            bytes=int(data["bytes"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )


class UploadStore(Protocol):
    def save(self, tenant: str, source: Path, kind: str, content_type: str) -> Upload: ...
    def find(self, tenant: str, upload_id: str) -> Upload | None: ...
    def copy_to(self, tenant: str, upload_id: str, target: Path) -> Upload | None: ...


def _new(source: Path, kind: str, content_type: str, ttl: timedelta) -> Upload:
    created = now()
    return Upload(uuid.uuid4().hex, kind, content_type, source.stat().st_size, created, created + ttl)


class LocalUploads:
    """`<root>/<tenant tag>-<id>` and its record `<tenant tag>-<id>.json`."""

    def __init__(self, root: Path, ttl_seconds: float) -> None:
        self.root = root.resolve()
        self.ttl = timedelta(seconds=ttl_seconds)

    def _path(self, tenant: str, upload_id: str) -> Path:
        return self.root / f"{owner_tag(tenant)}-{upload_id}"

    def save(self, tenant: str, source: Path, kind: str, content_type: str) -> Upload:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sweep()
        upload = _new(source, kind, content_type, self.ttl)
        path = self._path(tenant, upload.upload_id)
        shutil.move(source, path)
        path.with_suffix(".json").write_text(json.dumps(upload.to_json()))
        return upload

    def find(self, tenant: str, upload_id: str) -> Upload | None:
        if not _ID.fullmatch(upload_id):
            return None
        record = self._path(tenant, upload_id).with_suffix(".json")
        try:
            upload = Upload.from_json(json.loads(record.read_text()))
        except (OSError, ValueError, KeyError):
            return None
        return upload if upload.expires_at > now() else None

    def copy_to(self, tenant: str, upload_id: str, target: Path) -> Upload | None:
        upload = self.find(tenant, upload_id)
        if upload is None:
            return None
        try:
            shutil.copyfile(self._path(tenant, upload_id), target)
        except FileNotFoundError:  # swept between the two steps
            return None
        return upload

    def sweep(self) -> int:
        """Delete expired uploads (and strays without a record); how many were deleted."""
        deleted = 0
        for record in self.root.glob("*.json"):
            try:
                expired = Upload.from_json(json.loads(record.read_text())).expires_at <= now()
            except (OSError, ValueError, KeyError):
                expired = True
            if expired:
                record.with_suffix("").unlink(missing_ok=True)
                record.unlink(missing_ok=True)
                deleted += 1
        return deleted


class GcsUploads:
    """Objects `uploads/<tenant tag>/<id>` in one bucket, the upload's record in their metadata."""

    PREFIX = "uploads/"

    def __init__(self, client: Any, bucket: str, ttl_seconds: float) -> None:
        self.bucket = client.bucket(bucket)
        self.ttl = timedelta(seconds=ttl_seconds)

    def _name(self, tenant: str, upload_id: str) -> str:
        return f"{self.PREFIX}{owner_tag(tenant)}/{upload_id}"

    def save(self, tenant: str, source: Path, kind: str, content_type: str) -> Upload:
        upload = _new(source, kind, content_type, self.ttl)
        blob = self.bucket.blob(self._name(tenant, upload.upload_id))
        blob.metadata = {k: str(v) for k, v in upload.to_json().items()}
        blob.upload_from_filename(str(source), content_type=content_type, if_generation_match=0, timeout=120)
        source.unlink(missing_ok=True)
        return upload

    def find(self, tenant: str, upload_id: str) -> Upload | None:
        if not _ID.fullmatch(upload_id):
            return None
        blob = self.bucket.get_blob(self._name(tenant, upload_id), timeout=30)
        if blob is None or not blob.metadata:
            return None
        upload = Upload.from_json(blob.metadata)
        return upload if upload.expires_at > now() else None

    def copy_to(self, tenant: str, upload_id: str, target: Path) -> Upload | None:
        upload = self.find(tenant, upload_id)
        if upload is None:
            return None
        self.bucket.blob(self._name(tenant, upload_id)).download_to_filename(str(target), timeout=120)
        return upload


def upload_id_of(url: str) -> str:
    return url.removeprefix(SCHEME)


def resolve(store: UploadStore | None, tenant: str, url: str, field: str, target: Path | None = None) -> Upload:
    """The upload `url` names, for `tenant` and of a kind `field` takes (copied to `target` when
    given); ServeError naming the field otherwise."""
    if store is None:
        raise invalid_field(field, "uploads are not enabled on this server (UPLOAD_BUCKET)")
    upload_id = upload_id_of(url)
    upload = store.find(tenant, upload_id) if target is None else store.copy_to(tenant, upload_id, target)
    if upload is None:
        raise ServeError(
            "input_unreachable", f"{field}: no upload {upload_id!r} for this key (uploads expire; upload it again)"
        )
    kinds = FIELD_KINDS.get(field, ())
    if upload.kind not in kinds:
        raise invalid_field(
            field, f"takes {' or '.join(kinds)}, and upload {upload_id} is {upload.kind} ({upload.content_type})"
        )
    return upload
