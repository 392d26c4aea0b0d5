"""The one policy for where this server may connect on a client's behalf: input downloads
(video_in, audio_in) and job webhooks alike.

Threat model: a client names a URL hoping the server (inside the VPC, next to the metadata server)
will reach what the client cannot: 169.254.169.254, the metadata names, private services, or
loopback. So a host is resolved once, every address it resolves to is checked (loopback, private,
link-local, multicast, reserved, shared 100.64/10 and unspecified ranges are refused, also when
wrapped in IPv4-mapped, NAT64, 6to4 or Teredo IPv6 forms), and the connection then goes to the
checked address with the name kept for TLS (SNI) and Host: a DNS answer cannot change between the
check and the use (rebinding). Spellings such as `http://2130706433/` or `http://0177.0.0.1/`
resolve to loopback and are refused like any other.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from serve.errors import ServeError

_METADATA_HOSTS = {"metadata.google.internal", "metadata", "metadata.goog"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True)
class AddressPolicy:
    """Which addresses are acceptable beyond the public internet (neither is ever link-local,
    metadata, shared, multicast or reserved)."""

    allow_loopback: bool = False  # tests only: loopback, and http:// for inputs
    allow_private: bool = False  # webhooks with WEBHOOK_ALLOW_PRIVATE: RFC 1918 / ULA and loopback


@dataclass(frozen=True)
class Pinned:
    """A checked URL: connect to `url` (the checked address), send `host` as Host and `sni` for TLS."""

    url: str
    host: str
    sni: str
    address: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Host": self.host}

    @property
    def extensions(self) -> dict[str, Any]:
        return {"sni_hostname": self.sni}


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour or (address.teredo[1] if address.teredo else None)


def _allowed(candidate: IpAddress, policy: AddressPolicy) -> bool:
    if candidate.is_global and not candidate.is_multicast:
        return True
    if candidate.is_loopback:
        return policy.allow_loopback or policy.allow_private
    if policy.allow_private and candidate.is_private:
        # Private here means RFC 1918 / ULA only: link-local (the metadata server), the shared
        # carrier range and unspecified/reserved ones are `is_private` too in Python, and never allowed.
        return not (candidate.is_link_local or candidate.is_unspecified or candidate.is_reserved) and not (
            isinstance(candidate, ipaddress.IPv4Address) and candidate in ipaddress.ip_network("100.64.0.0/10")
        )
    return False


def check_address(text: str, field: str, policy: AddressPolicy) -> IpAddress:
    """The address, or ServeError `unsafe_url` when it (or an IPv4 address wrapped in it) is refused."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    candidates: list[IpAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_v4(address)) is not None:
        candidates.append(inner)
    for candidate in candidates:
        if not _allowed(candidate, policy):
            raise ServeError("unsafe_url", f"{field} resolves to {address}, which is not a public address")
    return address


def resolve(host: str, port: int, field: str, policy: AddressPolicy) -> str:
    """The address to connect to, after checking all of `host`'s (IPv4 first: Compute Engine's
    default networks have no IPv6 egress)."""
    name = host.lower().rstrip(".")
    if name in _METADATA_HOSTS or name.endswith(".internal"):
        raise ServeError("unsafe_url", f"{field} must not point at the metadata server or internal names")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ServeError("input_unreachable", f"{field}: host {host!r} does not resolve") from None
    addresses = [check_address(str(info[4][0]), field, policy) for info in infos]
    return str(sorted(addresses, key=lambda a: a.version)[0])


def check_url(url: str, field: str, schemes: tuple[str, ...]) -> tuple[str, str, int]:
    """-> (scheme, host, port) of a URL with an allowed scheme and a host; `unsafe_url` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ServeError("unsafe_url", f"{field} is not a valid URL") from None
    if parts.scheme not in schemes:
        shown = " or ".join(f"{s}://" for s in schemes)
        raise ServeError("unsafe_url", f"{field} must be a {shown} URL, not {parts.scheme or 'a path'}://")
    if not parts.hostname:
        raise ServeError("unsafe_url", f"{field} has no host")
    if parts.username or parts.password:
        raise ServeError("unsafe_url", f"{field} must not carry credentials")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def pin(url: str, field: str, policy: AddressPolicy, schemes: tuple[str, ...]) -> Pinned:
    """Check `url` and resolve its host once; the result connects to the address that was checked."""
    scheme, host, port = check_url(url, field, schemes)
    address = resolve(host, port, field, policy)
    parts = urlsplit(url)
    netloc = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
    return Pinned(url=pinned, host=parts.netloc.rsplit("@", 1)[-1], sni=host, address=address)
