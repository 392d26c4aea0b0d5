"""Structured logs: one JSON line per request, in the shape Cloud Logging's agent lifts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve.api.middleware import trace_fields
from tests.support.server import live_server
from tests.support.settings import KEY, SMALL, make_settings

TRACE = "105445aa7843bc8bf206b12000100000"


def test_request_line_has_severity_request_id_trace_http_request_and_timings(
    tmp_path: Path, log_lines: list[str]
) -> None:
    settings = make_settings(tmp_path, gcp_project="my-project")
    with live_server(settings) as live, live.client() as client:
        response = client.post(
            "/predict",
            json={"prompt": "logged", **SMALL},
            headers={"X-API-Key": KEY, "X-Cloud-Trace-Context": f"{TRACE}/1;o=1", "User-Agent": "tests/1"},
        )
    assert response.status_code == 200
    rid = response.json()["metadata"]["request_id"]
    entries = [json.loads(line) for line in log_lines]  # every line is JSON
    (access,) = [e for e in entries if e["logger"] == "serve.access" and e.get("request_id") == rid]
    assert access["severity"] == "INFO"
    assert access["logging.googleapis.com/trace"] == f"projects/my-project/traces/{TRACE}"
    assert access["logging.googleapis.com/spanId"] == "0000000000000001"
    assert access["logging.googleapis.com/trace_sampled"] is True
    http = access["httpRequest"]
    assert (http["requestMethod"], http["requestUrl"], http["status"]) == ("POST", "/predict", 200)
    assert http["latency"].endswith("s") and http["userAgent"] == "tests/1"
    assert {"denoise", "decode", "encode_mp4"} <= set(access["timings"])
    assert KEY not in "\n".join(log_lines)


@pytest.mark.parametrize(
    ("header", "project", "expected"),
    [
        ("", "p", {}),
        (f"{TRACE}/1;o=1", None, {}),
        ("not-a-trace", "p", {}),
        (f"{TRACE}", "p", {"trace": f"projects/p/traces/{TRACE}"}),
        (
            f"{TRACE}/1;o=1",
            "p",
            {"trace": f"projects/p/traces/{TRACE}", "span_id": "0000000000000001", "trace_sampled": True},
        ),
    ],
)
def test_trace_fields(header: str, project: str | None, expected: dict) -> None:
    assert trace_fields(header, project) == expected
