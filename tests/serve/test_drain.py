"""Draining before shutdown: in-flight work completes, new work gets 503, /health says so."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from tests.support.backends import GatedBackend
from tests.support.server import live_server
from tests.support.settings import KEY, SMALL, make_settings

HEADERS = {"X-API-Key": KEY}


def test_drain_finishes_in_flight_work_and_refuses_new_work(tmp_path: Path) -> None:
    backend = GatedBackend()
    with live_server(make_settings(tmp_path), backend=backend) as live:
        results: dict[str, httpx.Response] = {}

        def post() -> None:
            with live.client() as client:
                results["running"] = client.post("/predict", json={"prompt": "running", **SMALL}, headers=HEADERS)

        worker = threading.Thread(target=post)
        worker.start()
        assert backend.started.wait(10)
        with live.client() as client:
            drained = client.post("/admin/drain")
            refused = client.post("/predict", json={"prompt": "late", **SMALL}, headers=HEADERS)
            during = client.get("/health")
            backend.release.set()
            worker.join(30)
            after = client.get("/health")
    assert drained.status_code == 200 and drained.json() == {"draining": True, "in_flight": 1}
    assert refused.status_code == 503
    assert refused.json()["error"] == "draining"
    assert "Retry-After" in refused.headers
    assert during.status_code == 503
    assert (during.json()["status"], during.json()["in_flight"]) == ("draining", 1)
    assert results["running"].status_code == 200
    assert (after.status_code, after.json()["in_flight"]) == (503, 0)
    assert backend.prompts == ["running"]


@pytest.mark.anyio
async def test_drain_is_refused_from_outside_the_machine(tmp_path: Path) -> None:
    from serve.api.app import create_app
    from serve.wiring import build

    container = build(make_settings(tmp_path), backend=GatedBackend())
    app = create_app(container)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/admin/drain")
    assert response.status_code == 404
    assert container.runner.draining is False


def test_drain_is_not_in_the_public_schema(tiny_server) -> None:
    with tiny_server.client() as client:
        assert "/admin/drain" not in client.get("/openapi.json").json()["paths"]
