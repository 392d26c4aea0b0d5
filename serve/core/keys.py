"""API keys: constant-time comparison, tenants, and a key id that is safe to log (the 401 is serve/api/deps.py's)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^([a-z0-9][a-z0-9_-]{0,62}):(.+)$")


def split_tenant(entry: str) -> tuple[str, str]:
    """`tenant:key` gives (tenant, key); a bare key belongs to the default tenant."""
    match = _TENANT.match(entry)
    return (match[1], match[2]) if match else (DEFAULT_TENANT, entry)


def key_id(key: str) -> str:
    """A short, stable, non-reversible name for a key, for logs and metrics."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyStore:
    """The accepted keys. Several may be valid at once, so keys can be rotated. An entry
    `tenant:key` puts the key in a tenant (jobs are visible within their tenant only)."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = self._digest(keys)
        self.generated: str | None = None

    @staticmethod
    def _digest(keys: list[str]) -> list[tuple[bytes, str, str]]:
        pairs = [split_tenant(k) for k in keys]
        return [(hashlib.sha256(k.encode()).digest(), key_id(k), tenant) for tenant, k in pairs]

    def replace(self, keys: list[str]) -> None:
        """Swap in a new set of keys at once (a single assignment, safe across threads)."""
        self._digests = self._digest(keys)

    @property
    def available(self) -> bool:
        return bool(self._digests)

    @classmethod
    def from_settings(
        cls, keys_csv: str, key_file: Path | None, *, allow_generate: bool, from_secret: bool = False
    ) -> KeyStore:
        keys = [k.strip() for k in keys_csv.split(",") if k.strip()]
        if key_file is not None:
            for line in key_file.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        if from_secret:
            return cls(keys)  # Secret Manager adds its keys once they are read
        if not keys and not allow_generate:
            raise RuntimeError("no API keys configured (API_KEYS, API_KEY_FILE or API_KEY_SECRET)")
        generated = None
        if not keys:
            generated = secrets.token_urlsafe(32)
            keys = [generated]
        store = cls(keys)
        store.generated = generated
        return store

    def verify(self, presented: str | None) -> str | None:
        """The key id when `presented` is a valid key, else None; time does not depend on which."""
        found = self.identify(presented)
        return found[0] if found else None

    def identify(self, presented: str | None) -> tuple[str, str] | None:
        """(key id, tenant) when `presented` is a valid key, else None."""
        # Comparing fixed-length digests keeps the time independent of the key's length and
        # content, and every key is compared so the time does not say which one matched.
        digest = hashlib.sha256((presented or "").encode("utf-8", "surrogateescape")).digest()
        found = None
        for candidate, ident, tenant in self._digests:  # one snapshot of the list, even mid-rotation
            if hmac.compare_digest(digest, candidate) and presented:
                found = (ident, tenant)
        return found
