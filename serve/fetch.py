"""Fetching a request's input files (video_in, audio_in) safely.

`gs://bucket/object` goes through the Cloud Storage client (the server's own credentials);
`https://` through httpx, SSRF-safe: the host is resolved once, every address is checked
(loopback, private, link-local, multicast, reserved, shared and unspecified ranges are refused,
also inside IPv4-mapped and NAT64 IPv6 forms), the connection goes to the checked address (with
the name kept for TLS and Host, so a DNS answer cannot change between check and use), redirects
are followed by hand and re-checked, and size and time are capped. Any other scheme is refused.
Spellings such as `http://2130706433/` or `http://0177.0.0.1/` resolve to loopback and are refused
by the address check, like the metadata server's names and 169.254.169.254.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

_METADATA_HOSTS = {"metadata.google.internal", "metadata", "metadata.goog"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_MAX_REDIRECTS = 5


class FetchError(Exception):
    """An input that cannot be used; `code` and `status` become the API error."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.status = code, status


@dataclass(frozen=True, kw_only=True)
class FetchPolicy:
    max_bytes: int = 512 * 1024**2
    timeout: float = 60.0
    allow_loopback: bool = False  # tests only: http:// and 127.0.0.1 / ::1
    verify: Any = True  # TLS verification for httpx: the system's CAs (tests pass their own CA)


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour or (address.teredo[1] if address.teredo else None)


def check_address(text: str, field: str, policy: FetchPolicy) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Refuse every address that is not on the public internet (loopback only by the test setting)."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_v4(address)) is not None:
        candidates.append(inner)
    for candidate in candidates:
        if candidate.is_loopback and policy.allow_loopback:
            continue
        if not candidate.is_global or candidate.is_multicast:
            raise FetchError("unsafe_url", f"{field} resolves to {address}, which is not a public address")
    return address


def resolve(host: str, port: int, field: str, policy: FetchPolicy) -> str:
    """The address to connect to, after checking all of `host`'s (IPv4 first: Compute Engine's
    default networks have no IPv6 egress)."""
    name = host.lower().rstrip(".")
    if name in _METADATA_HOSTS or name.endswith(".internal"):
        raise FetchError("unsafe_url", f"{field} must not point at the metadata server or internal names")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchError("input_unreachable", f"{field}: host {host!r} does not resolve") from None
    addresses = [check_address(str(info[4][0]), field, policy) for info in infos]
    return str(sorted(addresses, key=lambda a: a.version)[0])


def check_url(url: str, field: str, policy: FetchPolicy) -> tuple[str, str, int]:
    """-> (scheme, host, port) of an acceptable http(s) URL; FetchError otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchError("unsafe_url", f"{field} is not a valid URL") from None
    allowed = ("https", "http") if policy.allow_loopback else ("https",)
    if parts.scheme not in allowed:
        raise FetchError("unsafe_url", f"{field} must be a gs:// or https:// URL, not {parts.scheme or 'a path'}://")
    if not parts.hostname:
        raise FetchError("unsafe_url", f"{field} has no host")
    if parts.username or parts.password:
        raise FetchError("unsafe_url", f"{field} must not carry credentials")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def fetch_https(url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    """Download `url` to `target`; returns its size."""
    deadline = time.monotonic() + policy.timeout
    for _ in range(_MAX_REDIRECTS + 1):
        scheme, host, port = check_url(url, field, policy)
        address = resolve(host, port, field, policy)
        parts = urlsplit(url)
        netloc = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept-Encoding": "identity"}
        extensions: dict[str, Any] = {"sni_hostname": host}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("input_unreachable", f"{field}: download took longer than {policy.timeout:g} s")
        try:
            with (
                httpx.Client(
                    timeout=remaining, follow_redirects=False, trust_env=False, verify=policy.verify
                ) as client,
                client.stream("GET", pinned, headers=headers, extensions=extensions) as response,
            ):
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise FetchError("input_unreachable", f"{field}: the server answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                    raise FetchError("input_too_large", f"{field} is larger than {policy.max_bytes} bytes", 413)
                size = 0
                with target.open("wb") as out:
                    for block in response.iter_bytes(1 << 20):
                        size += len(block)
                        if size > policy.max_bytes:
                            raise FetchError("input_too_large", f"{field} is larger than {policy.max_bytes} bytes", 413)
                        if time.monotonic() > deadline:
                            raise FetchError(
                                "input_unreachable", f"{field}: download took longer than {policy.timeout:g} s"
                            )
                        out.write(block)
                return size
        except httpx.HTTPError as exc:
            raise FetchError("input_unreachable", f"{field} could not be downloaded: {type(exc).__name__}") from None
    raise FetchError("unsafe_url", f"{field}: more than {_MAX_REDIRECTS} redirects")


def fetch_gcs(client: Any, url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    """Download `gs://bucket/object` with the server's storage client."""
    from google.api_core import exceptions as gexc

    bucket_name, _, blob_name = url.removeprefix("gs://").partition("/")
    if not bucket_name or not blob_name:
        raise FetchError("invalid_request", f"{field} must look like gs://bucket/object")
    try:
        blob = client.bucket(bucket_name).get_blob(blob_name, timeout=policy.timeout)
        if blob is None:
            raise FetchError("input_unreachable", f"{field}: {url} does not exist")
        if blob.size is not None and blob.size > policy.max_bytes:
            raise FetchError("input_too_large", f"{field} is larger than {policy.max_bytes} bytes", 413)
        blob.download_to_filename(str(target), timeout=policy.timeout)
    except gexc.Forbidden:
        raise FetchError("input_unreachable", f"{field}: this server may not read {url}") from None
    except gexc.GoogleAPIError as exc:
        raise FetchError("input_unreachable", f"{field}: {url} could not be read ({type(exc).__name__})") from None
    return target.stat().st_size


def fetch(client_factory: Any, url: str, target: Path, field: str, policy: FetchPolicy) -> int:
    if url.startswith("gs://"):
        return fetch_gcs(client_factory(), url, target, field, policy)
    return fetch_https(url, target, field, policy)
