"""The lifecycle in /health: starting, ready, setup_failed; the process stays up."""

from __future__ import annotations

from pathlib import Path

from tests.support.backends import GatedBackend
from tests.support.server import live_server
from tests.support.settings import KEY, SMALL, make_settings


def test_failed_load_reports_setup_failed_with_reason(tmp_path: Path) -> None:
    backend = GatedBackend(fail_load="weights not found at /models/ltx")
    with live_server(make_settings(tmp_path), backend=backend) as live, live.client() as client:
        health = client.get("/health")
        predict = client.post("/predict", json={"prompt": "x", **SMALL}, headers={"X-API-Key": KEY})
        root = client.get("/")
    assert health.status_code == 503
    assert health.json()["status"] == "setup_failed"
    assert "weights not found at /models/ltx" in health.json()["reason"]
    assert predict.status_code == 503
    assert predict.json()["error"] == "not_ready"
    assert "Retry-After" in predict.headers
    assert root.status_code == 200 and root.json()["status"] == "setup_failed"


def test_ready_after_warm_up(tiny_server) -> None:
    with tiny_server.client() as client:
        health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ready",
        "reason": None,
        "model": "ltx-video-tiny",
        "queue_depth": 0,
        "in_flight": 0,
    }


def test_starting_until_the_model_has_loaded(tmp_path: Path) -> None:
    backend = GatedBackend()
    original_load = backend.load
    backend.load = lambda: (backend.release.wait(30), original_load())  # type: ignore[method-assign]
    with live_server(make_settings(tmp_path, warmup=False), backend=backend, ready=False) as live:
        with live.client() as client:
            starting = client.get("/health")
        backend.release.set()
        live.wait_ready()
        with live.client() as client:
            ready = client.get("/health")
    assert starting.status_code == 503
    assert starting.json()["status"] == "starting"
    assert ready.status_code == 200


def test_failed_warm_up_is_setup_failed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, model="ltx-video", model_path=str(tmp_path / "no-such-model"))
    with live_server(settings) as live, live.client() as client:
        health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "setup_failed"
    assert health.json()["reason"]


def test_root_describes_the_service_and_docs_are_served(tiny_server) -> None:
    with tiny_server.client() as client:
        root = client.get("/")
        docs = client.get("/docs")
        schema = client.get("/openapi.json")
    assert root.status_code == 200
    assert root.json()["model"]["model"] == "ltx-video-tiny"
    assert root.json()["endpoints"]["predict"] == "POST /predict"
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/predict" in schema.json()["paths"]
    assert schema.json()["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


def test_docs_work_offline_from_files_the_server_ships(tiny_server) -> None:
    """Swagger UI's page, script and style come from this server (the swagger-ui-py wheel's copy of
    Swagger UI 5, which renders OpenAPI 3.1), not from a CDN: /docs works with no internet."""
    import re

    with tiny_server.client() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        external = re.findall(r"(?:src|href)=[\"'](https?://[^\"']+)", page.text)
        assert external == [], external
        assets = re.findall(r"(?:src|href)=[\"'](/docs/static/[^\"']+)", page.text)
        assert {a.rsplit("/", 1)[1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            got = client.get(asset)
            assert got.status_code == 200 and len(got.content) > 1000, asset
        bundle = client.get("/docs/static/swagger-ui-bundle.js").text
        assert re.search(r'"5\.\d+\.\d+"', bundle)  # Swagger UI 5: OpenAPI 3.1
        assert client.get("/docs/static/../../etc/passwd").status_code == 404
        assert client.get("/docs/static/swagger-editor-bundle.js").status_code == 404  # only what /docs uses
        assert client.get("/redoc").status_code == 404  # ReDoc needs a CDN: not offered
