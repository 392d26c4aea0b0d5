"""Prometheus metrics on their own port, never on the API port."""

from __future__ import annotations

import httpx

from tests.support.settings import KEY, SMALL


def test_metrics_are_served_apart_from_the_api(tiny_server) -> None:
    with tiny_server.client() as client:
        assert client.post("/predict", json={"prompt": "x", **SMALL}, headers={"X-API-Key": KEY}).status_code == 200
        assert client.post("/predict", json={"prompt": ""}, headers={"X-API-Key": KEY}).status_code == 422
        assert client.get("/metrics").status_code == 404
    text = httpx.get(tiny_server.metrics_url, timeout=10).text
    assert 'videogen_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'videogen_http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert "videogen_generation_duration_seconds_count 1.0" in text
    assert 'videogen_stage_duration_seconds_count{stage="denoise"} 1.0' in text
    assert 'videogen_stage_duration_seconds_count{stage="encode_mp4"} 1.0' in text
    assert "videogen_queue_depth 0.0" in text
    assert "videogen_ready 1.0" in text
    assert 'videogen_generations_total{outcome="succeeded"} 1.0' in text


def test_unknown_paths_share_one_label(tiny_server) -> None:
    with tiny_server.client() as client:
        for n in range(3):
            assert client.get(f"/nope/{n}").status_code == 404
    text = httpx.get(tiny_server.metrics_url, timeout=10).text
    assert 'videogen_http_requests_total{method="GET",route="unmatched",status="404"} 3.0' in text
