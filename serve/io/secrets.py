"""API keys from Secret Manager: every ENABLED version of one secret is a valid key.

Rotation is adding a version and later disabling the old one; the set is re-read in the
background, so neither needs a restart. Until a key has been loaded, or when the secret has no
enabled version, the store is empty and every protected call gets a 401: fail closed, never open.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("serve.io.secrets")


def make_client(endpoint: str | None) -> Any:
    from google.cloud import secretmanager

    if endpoint:  # a local REST endpoint (tests): no real credentials
        from google.auth.credentials import AnonymousCredentials

        return secretmanager.SecretManagerServiceClient(
            credentials=AnonymousCredentials(), transport="rest", client_options={"api_endpoint": endpoint}
        )
    return secretmanager.SecretManagerServiceClient(transport="rest")


def read_enabled_keys(client: Any, secret: str) -> list[str]:
    """The payloads of every ENABLED version of `secret` (projects/P/secrets/NAME)."""
    keys = []
    for version in client.list_secret_versions(request={"parent": secret, "filter": "state:ENABLED"}):
        if version.state.name != "ENABLED":  # do not rely on the server honouring the filter
            continue
        payload = client.access_secret_version(name=version.name).payload.data
        key = payload.decode("utf-8").strip()
        if key:
            keys.append(key)
    return keys


class SecretKeyRefresher:
    """Loads the keys at once, then every `interval` seconds, on a thread of its own."""

    def __init__(self, *, on_keys: Callable[[list[str]], None], client: Any, secret: str, interval: float) -> None:
        self.on_keys, self.client, self.secret, self.interval = on_keys, client, secret, interval
        self.last_error: str | None = "not loaded yet"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="key-refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def refresh(self) -> None:
        try:
            keys = read_enabled_keys(self.client, self.secret)
        except Exception as exc:  # keep the last good set; an empty store stays closed
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("could not read API keys from Secret Manager", extra={"error": self.last_error})
            return
        self.on_keys(keys)
        self.last_error = None if keys else "the secret has no enabled version"
        log.info("API keys loaded from Secret Manager", extra={"count": len(keys)})

    def _loop(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self.interval):
                return
