"""Hostile and faulty clients at the HTTP boundary: request ids, unhandled errors, a full disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.backends import GatedBackend
from tests.support.server import live_server
from tests.support.settings import KEY, SMALL, make_settings

HEADERS = {"X-API-Key": KEY}


def test_the_same_request_id_twice_gives_two_videos(tiny_server: Any) -> None:
    with tiny_server.client() as client:
        first = client.post(
            "/predict", json={"prompt": "a", "seed": 1, **SMALL}, headers={**HEADERS, "X-Request-ID": "same-id-123"}
        )
        second = client.post(
            "/predict", json={"prompt": "b", "seed": 2, **SMALL}, headers={**HEADERS, "X-Request-ID": "same-id-123"}
        )
        assert first.status_code == second.status_code == 200
        a, b = first.json(), second.json()
        videos = [client.get(r["video_url"], headers=HEADERS).content for r in (a, b)]
    assert a["video_url"] != b["video_url"]  # the header is a correlation id, never a file name
    assert a["metadata"]["request_id"] == b["metadata"]["request_id"] == "same-id-123"
    assert videos[0] != videos[1] and all(v[4:8] == b"ftyp" for v in videos)


def test_a_request_id_with_dots_is_only_a_correlation_id(tiny_server: Any) -> None:
    with tiny_server.client() as client:
        response = client.post(
            "/predict", json={"prompt": "a", **SMALL}, headers={**HEADERS, "X-Request-ID": "my.request.id.1"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "my.request.id.1"
    assert response.json()["metadata"]["request_id"] == "my.request.id.1"


class _BrokenDescribe(GatedBackend):
    """describe() fails: GET / then meets an error no handler knows."""

    def __init__(self) -> None:
        super().__init__()
        self.release.set()
        self.broken = False

    def describe(self) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("boom")
        return super().describe()


def test_an_unhandled_error_is_a_clean_500_with_the_request_id(tmp_path: Path) -> None:
    backend = _BrokenDescribe()
    with live_server(make_settings(tmp_path), backend=backend) as live, live.client() as client:
        backend.broken = True
        response = client.get("/", headers={"X-Request-ID": "trace-me-500"})
        backend.broken = False
        after = client.get("/health")
    assert response.status_code == 500 and response.headers["x-request-id"] == "trace-me-500"
    assert response.json() == {
        "error": "internal_error",
        "message": "internal error; quote the request id when reporting it",
        "request_id": "trace-me-500",
    }
    assert "boom" not in response.text and after.status_code == 200


def test_a_full_disk_takes_the_server_out_until_space_returns(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, min_free_disk_bytes=2**60)  # more than any disk has
    with live_server(settings) as live, live.client() as client:
        health = client.get("/health")
        refused = client.post("/predict", json={"prompt": "a", **SMALL}, headers=HEADERS)
        live.container.settings.min_free_disk_bytes = 1  # space returns
        healthy = client.get("/health")
        served = client.post("/predict", json={"prompt": "a", **SMALL}, headers=HEADERS)
    assert (health.status_code, health.json()["status"]) == (503, "disk_full")
    assert "MIN_FREE_DISK_BYTES" in health.json()["reason"]
    assert (refused.status_code, refused.json()["error"]) == (503, "disk_full") and "Retry-After" in refused.headers
    assert healthy.status_code == 200 and served.status_code == 200
