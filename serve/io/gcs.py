"""Videos to Cloud Storage: checked destinations, verified uploads, signed URLs, and a
bounded background retry so that an upload that fails is kept and tried again, not lost."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from serve.errors import invalid_field
from serve.io.checksums import file_crc32c

log = logging.getLogger("serve.io.gcs")

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
MAX_OBJECT_BYTES = 1024


def storage_client(*, endpoint: str | None, project: str | None) -> storage.Client:
    """A Cloud Storage client: the server's credentials, or anonymous against an emulator."""
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=project or "emulator",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    return storage.Client(project=project)


class UploadFailed(Exception):
    """The upload did not succeed after the client's retries."""


class DestinationExists(UploadFailed):
    """The object is already there with other content; it is never overwritten."""


@dataclass(frozen=True)
class Destination:
    bucket: str
    blob: str

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.blob}"


def parse_destination(value: str, allowed: set[str]) -> Destination:
    """`gs://bucket/path.mp4` normalised, or a 422 naming `gcs_destination`."""
    if not value.startswith("gs://"):
        raise invalid_field("gcs_destination", "must look like gs://bucket/path.mp4")
    bucket, _, name = value.removeprefix("gs://").partition("/")
    if not BUCKET_NAME.match(bucket):
        raise invalid_field("gcs_destination", f"{bucket!r} is not a valid bucket name")
    if bucket not in allowed:
        raise invalid_field("gcs_destination", f"bucket {bucket!r} is not one this server may write to")
    parts = [part for part in name.split("/") if part]  # drops leading, trailing and doubled slashes
    if not parts or any(part in (".", "..") for part in parts):
        raise invalid_field("gcs_destination", "object name must not be empty or contain '.' or '..' segments")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise invalid_field("gcs_destination", "object name must not contain control characters")
    blob = "/".join(parts)
    if not blob.endswith(".mp4"):
        raise invalid_field("gcs_destination", "object name must end in .mp4")
    if len(blob.encode()) > MAX_OBJECT_BYTES:
        raise invalid_field("gcs_destination", f"object name is longer than {MAX_OBJECT_BYTES} bytes")
    return Destination(bucket, blob)


class GcsOutput:
    """Uploads videos to the output bucket (or an allowed `gcs_destination`) and links to them."""

    def __init__(
        self,
        *,
        client: storage.Client,
        bucket: str,
        allowed_buckets: set[str],
        sign_urls: bool,
        url_lifetime: timedelta,
        retry_attempts: int,
        retry_delay: float,
        upload_timeout: float,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.allowed = allowed_buckets | {bucket}
        self.sign_urls = sign_urls
        self.url_lifetime = url_lifetime
        self.retry_attempts = retry_attempts
        self.retry_delay = retry_delay
        self.upload_timeout = upload_timeout
        self._background: set[asyncio.Task[None]] = set()

    def destination(self, request_id: str, requested: str | None) -> Destination:
        if requested is not None:
            return parse_destination(requested, self.allowed)
        day = datetime.now(UTC)
        return Destination(self.bucket, f"videos/{day:%Y/%m/%d}/{request_id}.mp4")

    def upload(self, path: Path, dest: Destination) -> None:
        """Upload once (with the client's retries); never overwrites an existing object."""
        blob = self.client.bucket(dest.bucket).blob(dest.blob)
        try:
            # if_generation_match=0 makes the write create-only, which also makes it safe for the
            # library to retry: a retry can never replace an object someone else wrote.
            blob.upload_from_filename(
                str(path),
                content_type="video/mp4",
                if_generation_match=0,
                checksum="crc32c",
                retry=DEFAULT_RETRY.with_timeout(self.upload_timeout),
                timeout=self.upload_timeout,
            )
        except gexc.PreconditionFailed:
            # Our own earlier attempt may have landed with its answer lost: that is success.
            existing = self.client.bucket(dest.bucket).get_blob(dest.blob)
            if existing is not None and existing.crc32c == file_crc32c(path):
                return
            raise DestinationExists(f"{dest.uri} already exists; it is never overwritten") from None
        except Exception as exc:  # transport errors, 5xx after retries, checksum mismatch
            raise UploadFailed(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def console_url(dest: Destination) -> str:
        """Opens only for a signed-in Google account that may read the object."""
        return f"https://storage.cloud.google.com/{dest.bucket}/{quote(dest.blob)}"

    def url(self, dest: Destination) -> str:
        if not self.sign_urls:
            return self.console_url(dest)
        blob = self.client.bucket(dest.bucket).blob(dest.blob)
        credentials: Any = self.client._credentials
        kwargs: dict[str, Any] = {}
        if not hasattr(credentials, "sign_bytes"):
            # A VM's credentials hold no private key: sign through IAM signBlob as the VM's
            # service account, with an access token from the same credentials.
            import google.auth.transport.requests

            credentials.refresh(google.auth.transport.requests.Request())
            kwargs = {"service_account_email": credentials.service_account_email, "access_token": credentials.token}
        return str(blob.generate_signed_url(version="v4", expiration=self.url_lifetime, method="GET", **kwargs))

    def retry_later(self, path: Path, dest: Destination, request_id: str) -> None:
        """Keep trying in the background, a bounded number of times; log the outcome."""
        task = asyncio.get_running_loop().create_task(self._retry(path, dest, request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retry(self, path: Path, dest: Destination, request_id: str) -> None:
        extra = {"request_id": request_id, "destination": dest.uri, "path": str(path)}
        for attempt in range(1, self.retry_attempts + 1):
            await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
            try:
                await asyncio.to_thread(self.upload, path, dest)
            except DestinationExists as exc:
                log.error("background upload stopped", extra={**extra, "error": str(exc)})
                return
            except UploadFailed as exc:
                log.warning("background upload failed", extra={**extra, "attempt": attempt, "error": str(exc)})
                continue
            log.info("background upload succeeded", extra={**extra, "attempt": attempt})
            path.unlink(missing_ok=True)  # Cloud Storage holds it now
            return
        log.error("background upload gave up; the video stays on local disk", extra=extra)
