"""Fetching a request's input files (video_in, audio_in) safely.

`gs://bucket/object` goes through the Cloud Storage client (the server's own credentials), only
from the buckets named for inputs; `https://` through httpx, to the address serve.io.netguard
checked (resolve once, check every address, connect to the checked one with the name kept for
TLS), redirects followed by hand and re-checked, size and time capped. Any other scheme is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from serve.errors import ServeError
from serve.io.netguard import AddressPolicy, pin

_MAX_REDIRECTS = 5


@dataclass(frozen=True, kw_only=True)
class FetchPolicy:
    max_bytes: int = 512 * 1024**2
    timeout: float = 60.0
    allow_loopback: bool = False  # tests only: http:// and 127.0.0.1 / ::1
    verify: Any = True  # TLS verification for httpx: the system's CAs (tests pass their own CA)

    @property
    def addresses(self) -> AddressPolicy:
        return AddressPolicy(allow_loopback=self.allow_loopback)

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_loopback else ("https",)


def check_url(url: str, field: str, policy: FetchPolicy) -> None:
    """Refuse an input URL before queueing: a bad scheme, or a host that resolves somewhere refused."""
    pin(url, field, policy.addresses, policy.schemes)


def fetch_https(url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    """Download `url` to `target`; returns its size."""
    deadline = time.monotonic() + policy.timeout
    for _ in range(_MAX_REDIRECTS + 1):
        pinned = pin(url, field, policy.addresses, policy.schemes)
        headers = {**pinned.headers, "Accept-Encoding": "identity"}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServeError("input_unreachable", f"{field}: download took longer than {policy.timeout:g} s")
        try:
            with (
                httpx.Client(
                    timeout=remaining, follow_redirects=False, trust_env=False, verify=policy.verify
                ) as client,
                client.stream("GET", pinned.url, headers=headers, extensions=pinned.extensions) as response,
            ):
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise ServeError("input_unreachable", f"{field}: the server answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                    raise ServeError("input_too_large", f"{field} is larger than {policy.max_bytes} bytes")
                size = 0
                with target.open("wb") as out:
                    for block in response.iter_bytes(1 << 20):
                        size += len(block)
                        if size > policy.max_bytes:
                            raise ServeError("input_too_large", f"{field} is larger than {policy.max_bytes} bytes")
                        if time.monotonic() > deadline:
                            raise ServeError(
                                "input_unreachable", f"{field}: download took longer than {policy.timeout:g} s"
                            )
                        out.write(block)
                return size
        except httpx.HTTPError as exc:
            raise ServeError("input_unreachable", f"{field} could not be downloaded: {type(exc).__name__}") from None
    raise ServeError("unsafe_url", f"{field}: more than {_MAX_REDIRECTS} redirects")


def fetch_gcs(client: Any, url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    """Download `gs://bucket/object` with the server's storage client."""
    from google.api_core import exceptions as gexc

    bucket_name, _, blob_name = url.removeprefix("gs://").partition("/")
    if not bucket_name or not blob_name:
        raise ServeError("invalid_request", f"{field} must look like gs://bucket/object")
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
    return target.stat().st_size


def fetch(client_factory: Any, url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    if url.startswith("gs://"):
        return fetch_gcs(client_factory(), url, target, field, policy)
    return fetch_https(url, target, field, policy)
