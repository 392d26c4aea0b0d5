"""The one address policy, for input downloads and webhooks alike."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from serve.errors import ServeError
from serve.io.netguard import AddressPolicy, check_address, pin
from serve.jobs.webhooks import UnsafeUrl, WebhookSender, check_url

WEBHOOK = AddressPolicy(allow_private=True)  # WEBHOOK_ALLOW_PRIVATE=true: the most permissive webhook policy
INPUT = AddressPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # the metadata server
        "100.64.0.1",  # shared (carrier-grade NAT) space
        "2002:a9fe:a9fe::1",  # 6to4 wrapping 169.254.169.254
        "::ffff:169.254.169.254",  # IPv4-mapped
        "64:ff9b::a9fe:a9fe",  # NAT64
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo wrapping a link-local-ish address
        "fe80::1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
    ],
)
@pytest.mark.parametrize("policy", [WEBHOOK, INPUT], ids=["webhook", "input"])
def test_never_allowed(address: str, policy: AddressPolicy) -> None:
    with pytest.raises(ServeError) as raised:
        check_address(address, "url", policy)
    assert raised.value.code == "unsafe_url"


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.1.1", "127.0.0.1", "fd00::1", "::1"])
def test_private_only_for_webhooks_that_allow_it(address: str) -> None:
    check_address(address, "webhook_url", WEBHOOK)
    with pytest.raises(ServeError):
        check_address(address, "video_in", INPUT)


def test_public_addresses_pass() -> None:
    assert str(check_address("8.8.8.8", "url", INPUT)) == "8.8.8.8"


@pytest.mark.parametrize("url", ["http://100.64.0.1/hook", "http://[2002:a9fe:a9fe::1]/hook", "http://metadata/x"])
def test_webhook_guard_refuses_what_the_fetcher_refuses(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url, allow_private=True)
    with pytest.raises(ServeError):
        pin(url, "video_in", AddressPolicy(allow_loopback=True), ("https", "http"))


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """`hook.test` resolves to the addresses queued in the dict, one answer per lookup (a
    rebinding DNS server); every other name resolves as usual."""
    answers: dict[str, list[str]] = {"hook.test": []}
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            address = answers[host].pop(0)
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    got: dict[str, Any] = {"hits": []}
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got["hits"].append({"host": self.headers["host"], "body": json.loads(body)})
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    got["port"], got["done"] = server.server_address[1], done
    yield got
    server.shutdown()


def test_webhook_connects_to_the_address_it_checked(resolver: dict[str, list[str]], receiver: dict[str, Any]) -> None:
    # The first answer (checked) is loopback, where the receiver is; a second lookup would get the
    # metadata server. The delivery must use the first answer and never ask again.
    resolver["hook.test"] += ["127.0.0.1", "169.254.169.254"]
    sender = WebhookSender("secret", allow_private=True, max_attempts=1)
    try:
        sender.send(f"http://hook.test:{receiver['port']}/hook", "job.succeeded", {"job_id": "j1"})
        assert receiver["done"].wait(10), "the webhook was not delivered"
    finally:
        sender.close()
    (hit,) = receiver["hits"]
    assert hit["host"] == f"hook.test:{receiver['port']}"  # the name is kept for Host
    assert hit["body"]["data"]["job_id"] == "j1"
    assert resolver["hook.test"] == ["169.254.169.254"]  # resolved once, at the check


def test_webhook_is_not_sent_when_its_name_now_resolves_somewhere_refused(
    resolver: dict[str, list[str]], receiver: dict[str, Any]
) -> None:
    resolver["hook.test"] += ["100.64.0.1"]
    sender = WebhookSender("secret", allow_private=True, max_attempts=1)
    try:
        sender.send(f"http://hook.test:{receiver['port']}/hook", "job.succeeded", {"job_id": "j2"})
        assert not receiver["done"].wait(1)
    finally:
        sender.close()
    assert receiver["hits"] == [] and resolver["hook.test"] == []
