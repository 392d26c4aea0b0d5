"""Fetching a request's input files (video_in, audio_in) safely.

`gs://bucket/object` goes through the Cloud Storage client (the server's own credentials), only
from the buckets named for inputs (INPUT_BUCKETS: the output bucket, or anyone else's, is not an
input unless listed); `https://` through httpx, to the address serve.io.netguard checked (resolve
once, check every address, connect to the checked one with the name kept for TLS), redirects
followed by hand and re-checked. Any other scheme is refused.

Each input has one wall-clock deadline (FETCH_TIMEOUT_SECONDS) that holds whatever the server
does: a watchdog shuts the connection's socket down when it passes, so a peer dripping one byte a
second cannot hold a download (or a worker thread) past it. Sizes are capped as bytes arrive.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from serve.errors import ServeError
from serve.io.gcs import BUCKET_NAME
from serve.io.netguard import AddressPolicy, pin

_MAX_REDIRECTS = 5


@dataclass(frozen=True, kw_only=True)
class FetchPolicy:
    max_bytes: int = 512 * 1024**2
    timeout: float = 60.0
    allow_loopback: bool = False  # tests only: http:// and 127.0.0.1 / ::1
    input_buckets: frozenset[str] = field(default_factory=frozenset)  # gs:// inputs only from these
    verify: Any = True  # TLS verification for httpx: the system's CAs (tests pass their own CA)

    @property
    def addresses(self) -> AddressPolicy:
        return AddressPolicy(allow_loopback=self.allow_loopback)

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_loopback else ("https",)


def gcs_object(url: str, field: str, policy: FetchPolicy) -> tuple[str, str]:
    """(bucket, object) of a gs:// input this server may read; ServeError otherwise."""
    bucket, _, name = url.removeprefix("gs://").partition("/")
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise ServeError("invalid_request", f"{field}: {bucket!r} is not a valid bucket name", fields=_field(field))
    if not name or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name) or len(name.encode()) > 1024:
        raise ServeError("invalid_request", f"{field} must look like gs://bucket/object", fields=_field(field))
    if bucket not in policy.input_buckets:
        raise ServeError(
            "unsafe_url",
            f"{field}: gs://{bucket} is not a bucket this server takes inputs from (INPUT_BUCKETS)",
        )
    return bucket, name


def _field(name: str) -> list[dict[str, str]]:
    return [{"field": name, "message": "invalid gs:// URL"}]


def check_url(url: str, field: str, policy: FetchPolicy) -> None:
    """Refuse an input URL before queueing: a bad scheme or bucket, or a host that resolves somewhere refused."""
    if url.startswith("gs://"):
        gcs_object(url, field, policy)
    else:
        pin(url, field, policy.addresses, policy.schemes)


class _Watchdog:
    """Shuts the connection's socket down at the deadline, which wakes a blocked read."""

    def __init__(self, deadline: float) -> None:
        self.sockets: list[socket.socket] = []
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: note the socket as soon as it is connected."""
        if event == "connection.connect_tcp.complete":
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                self.sockets.append(sock)
                if self.fired:
                    self._fire()

    def _fire(self) -> None:
        self.fired = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):  # already closed: nothing to wake
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def fetch_https(url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    """Download `url` to `target` within the policy's deadline; returns its size."""
    deadline = time.monotonic() + policy.timeout
    too_slow = ServeError("input_unreachable", f"{field}: download took longer than {policy.timeout:g} s")
    watchdog = _Watchdog(deadline)
    try:
        for _ in range(_MAX_REDIRECTS + 1):
            pinned = pin(url, field, policy.addresses, policy.schemes)
            headers = {**pinned.headers, "Accept-Encoding": "identity"}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise too_slow
            extensions = {**pinned.extensions, "trace": watchdog.trace}
            try:
                with (
                    httpx.Client(
                        timeout=remaining, follow_redirects=False, trust_env=False, verify=policy.verify
                    ) as client,
                    client.stream("GET", pinned.url, headers=headers, extensions=extensions) as response,
                ):
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise ServeError(
                            "input_unreachable", f"{field}: the server answered HTTP {response.status_code}"
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                        raise ServeError("input_too_large", f"{field} is larger than {policy.max_bytes} bytes")
                    return _save(response, target, field, policy, deadline, too_slow)
            except httpx.HTTPError as exc:
                if watchdog.fired or time.monotonic() >= deadline:
                    raise too_slow from None
                raise ServeError(
                    "input_unreachable", f"{field} could not be downloaded: {type(exc).__name__}"
                ) from None
        raise ServeError("unsafe_url", f"{field}: more than {_MAX_REDIRECTS} redirects")
    finally:
        watchdog.cancel()


def _save(
    response: httpx.Response, target: Path, field: str, policy: FetchPolicy, deadline: float, too_slow: ServeError
) -> int:
    size = 0
    with target.open("wb") as out:
        for block in response.iter_raw():  # as the bytes arrive: the checks run on every piece
            size += len(block)
            if size > policy.max_bytes:
                raise ServeError("input_too_large", f"{field} is larger than {policy.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise too_slow
            out.write(block)
    if time.monotonic() > deadline:
        raise too_slow
    return size


def fetch_gcs(client: Any, url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    """Download `gs://bucket/object` (an input bucket's) with the server's storage client."""
    from google.api_core import exceptions as gexc

    bucket_name, blob_name = gcs_object(url, field, policy)
    try:
        blob = client.bucket(bucket_name).get_blob(blob_name, timeout=policy.timeout)
        if blob is None:
            raise ServeError("input_unreachable", f"{field}: {url} does not exist")
        if blob.size is not None and blob.size > policy.max_bytes:
            raise ServeError("input_too_large", f"{field} is larger than {policy.max_bytes} bytes")
        blob.download_to_filename(str(target), timeout=policy.timeout)
    except gexc.Forbidden:
        raise ServeError("input_unreachable", f"{field}: this server may not read {url}") from None
    except gexc.GoogleAPIError as exc:
        raise ServeError("input_unreachable", f"{field}: {url} could not be read ({type(exc).__name__})") from None
    except ValueError as exc:  # the client's own checks of names
        raise ServeError("invalid_request", f"{field}: {exc}", fields=_field(field)) from None
    return target.stat().st_size


def fetch(client_factory: Any, url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    if url.startswith("gs://"):
        return fetch_gcs(client_factory(), url, target, field, policy)
    return fetch_https(url, target, field, policy)
