"""Webhooks: the job document POSTed to the client's URL when the job ends, signed in the
Standard Webhooks style, retried with backoff on a thread of their own.

Signature: `webhook-signature: v1,<base64 HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")>`
with headers `webhook-id` (unique per event, the same on every retry) and `webhook-timestamp`
(Unix seconds). A secret written `whsec_<base64>` is the decoded bytes, else its UTF-8 bytes.
URLs are checked by serve.io.netguard, the same policy as input downloads, when the job is submitted
and again at each delivery, and each delivery connects to the address that was checked (the name
kept for TLS and Host), so a DNS answer that changes after the check cannot redirect it: http(s)
only, never link-local, metadata, shared (100.64/10) or reserved addresses, also when wrapped in
IPv6 forms; private and loopback ones only with WEBHOOK_ALLOW_PRIVATE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from serve.errors import ServeError
from serve.io.netguard import AddressPolicy, Pinned, pin

log = logging.getLogger("serve.jobs.webhooks")
_SCHEMES = ("https", "http")


class UnsafeUrl(ValueError):
    """A webhook URL this server will not call."""


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()


def sign(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, message, hashlib.sha256).digest()).decode()


def check_url(url: str, *, allow_private: bool) -> Pinned:
    """The URL pinned to a checked address; UnsafeUrl when netguard refuses it."""
    try:
        return pin(url, "webhook_url", AddressPolicy(allow_private=allow_private), _SCHEMES)
    except ServeError as exc:
        raise UnsafeUrl(exc.message) from None


@dataclass
class Delivery:
    url: str
    webhook_id: str
    body: bytes
    attempt: int = 0
    not_before: float = 0.0


class WebhookSender:
    """One background thread; `send` never blocks the caller."""

    def __init__(
        self,
        secret: str,
        *,
        allow_private: bool,
        max_attempts: int = 6,
        first_delay: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self.secret = secret_bytes(secret)
        self.allow_private = allow_private
        self.max_attempts = max_attempts
        self.first_delay = first_delay
        self.timeout = timeout
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._pending: list[Delivery] = []
        self._thread = threading.Thread(target=self._main, name="webhooks", daemon=True)
        self._thread.start()

    def send(self, url: str, event: str, job: dict[str, Any]) -> None:
        body = json.dumps({"type": event, "data": job}, default=str, sort_keys=True).encode()
        self._queue.put(Delivery(url, f"{job['job_id']}-{event}", body))

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _main(self) -> None:
        while True:
            now = time.monotonic()
            wait = min((d.not_before for d in self._pending), default=now + 60) - now
            try:
                item = self._queue.get(timeout=max(wait, 0.0))
            except queue.Empty:
                pass
            else:
                if item is None:
                    return
                self._pending.append(item)
            now = time.monotonic()
            due = [d for d in self._pending if d.not_before <= now]
            self._pending = [d for d in self._pending if d.not_before > now]
            self._pending += [d for d in due if not self._deliver(d)]

    def _deliver(self, delivery: Delivery) -> bool:
        """True when done (delivered, or given up); False to try again later."""
        delivery.attempt += 1
        extra = {"webhook_id": delivery.webhook_id, "attempt": delivery.attempt}
        try:
            pinned = check_url(delivery.url, allow_private=self.allow_private)  # again: DNS may have changed
        except UnsafeUrl as exc:
            log.error("webhook not sent", extra={**extra, "error": str(exc)})
            return True
        timestamp = int(time.time())
        headers = {
            **pinned.headers,
            "content-type": "application/json",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, delivery.webhook_id, timestamp, delivery.body),
        }
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
                response = client.post(pinned.url, content=delivery.body, headers=headers, extensions=pinned.extensions)
            if 200 <= response.status_code < 300:
                log.info("webhook delivered", extra={**extra, "status": response.status_code})
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if delivery.attempt >= self.max_attempts:
            log.error("webhook given up", extra={**extra, "error": problem})
            return True
        delivery.not_before = time.monotonic() + self.first_delay * 2 ** (delivery.attempt - 1)
        log.warning("webhook failed; will retry", extra={**extra, "error": problem})
        return False
