"""Per-request plumbing as plain ASGI: request id, body limit, one access log line, metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import ServeError
from serve.obs.metrics import Metrics

log = logging.getLogger("serve.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_DRAIN_FACTOR = 16  # bodies up to 16x the cap are read to their end before the 413


class RequestContextMiddleware:
    """Outermost layer: everything inside it sees `state.request_id`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        project: str | None = None,
        streamed: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.project = project
        # Paths whose bodies are files (POST /uploads): passed through as they arrive, never held
        # in memory, and cut at their own cap.
        self.streamed = streamed or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status, responded = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            cap = self.streamed.get(scope["path"])
            if scope["method"] in _BODY_METHODS and cap is not None:
                declared = headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    state["error"] = "body_too_large"
                    await _send_error(
                        send_with_id, 413, "body_too_large", f"request body exceeds {cap} bytes", request_id, close=True
                    )
                    return
                receive = _capped(receive, cap)
            elif scope["method"] in _BODY_METHODS:
                buffered = await self._read_body(headers, receive)
                if buffered is None:
                    state["error"] = "body_too_large"
                    message = f"request body exceeds {self.max_body_bytes} bytes"
                    await _send_error(send_with_id, 413, "body_too_large", message, request_id, close=True)
                    return
                receive = _replay(buffered, receive)
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # What no handler took (Starlette's last resort answers outside this middleware, so its
            # 500 would lack X-Request-ID): answered here, with the id, and logged once.
            log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
            if responded:
                raise
            state["error"] = "internal_error"
            message = "internal error; quote the request id when reporting it"
            await _send_error(send_with_id, 500, "internal_error", message, request_id)
        finally:
            self._record(scope, headers, state, status, time.perf_counter() - started)

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> list[Message] | None:
        """The body's messages, or None when it is larger than allowed. A body a little too large
        is read to its end (and dropped) before the 413, so the client, still sending, gets the
        answer instead of a connection reset; a much larger one is not read at all."""
        declared = headers.get("content-length", "")
        drain_limit = _DRAIN_FACTOR * self.max_body_bytes
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            if int(declared) <= drain_limit:
                await _drain(receive, drain_limit)
            return None
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                if message.get("more_body", False):
                    await _drain(receive, drain_limit - size)
                return None
            if not message.get("more_body", False):
                return messages

    def _record(
        self, scope: Scope, headers: dict[str, str], state: dict[str, Any], status: int, seconds: float
    ) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(template, scope["method"], str(status)).inc()
        self.metrics.request_seconds.labels(template).observe(seconds)
        entry = {
            "request_id": state.get("request_id"),
            "key_id": state.get("key_id"),
            "method": scope["method"],
            "route": template,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        }
        for name in ("error", "timings", "video_path"):
            if name in state:
                entry[name] = state[name]
        # The structured log handler writes these as the entry's httpRequest and trace fields,
        # which Cloud Logging lifts. Headers other than these are never logged.
        client = scope.get("client") or ("", 0)
        entry["http_request"] = {
            "requestMethod": scope["method"],
            "requestUrl": scope["path"],
            "status": status,
            "latency": f"{seconds:.3f}s",
            "userAgent": headers.get("user-agent", "")[:256],
            "remoteIp": headers.get("x-forwarded-for", client[0]).split(",")[0].strip(),
            "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
        }
        entry.update(trace_fields(headers.get("x-cloud-trace-context", ""), self.project))
        if template not in ("/health", "unmatched") or status >= 400:
            log.info("request", extra=entry)


_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?$")


def trace_fields(header: str, project: str | None) -> dict[str, Any]:
    """The log record's trace fields (`trace`, `span_id`, `trace_sampled`, as the structured
    handler names them) from the load balancer's X-Cloud-Trace-Context header."""
    match = _TRACE.match(header.strip())
    if not match or not project:
        return {}
    fields: dict[str, Any] = {"trace": f"projects/{project}/traces/{match[1].lower()}"}
    if match[2]:
        fields["span_id"] = f"{int(match[2]) % 2**64:016x}"
    if match[3]:
        fields["trace_sampled"] = match[3] == "1"
    return fields


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive() that first returns the buffered body, then the client's next messages."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _send_error(
    send: Send, status: int, code: str, message: str, request_id: str, *, close: bool = False
) -> None:
    """A JSON error written at the ASGI level (no app to answer it)."""
    body = json.dumps({"error": code, "message": message, "request_id": request_id}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _capped(receive: Receive, cap: int) -> Receive:
    """`receive`, raising `body_too_large` once more than `cap` bytes have arrived."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > cap:
            raise ServeError("body_too_large", f"request body exceeds {cap} bytes")
        return message

    return counted


async def _drain(receive: Receive, limit: int) -> None:
    """Read and drop what is left of a request body, up to `limit` bytes."""
    read = 0
    while read <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
