"""Every request rule: a 422 that names the field; an oversize body: 413."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, SMALL, make_settings

HEADERS = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    settings = make_settings(
        tmp_path_factory.mktemp("validation"),
        max_height=512,
        max_width=768,
        max_num_frames=65,
        max_video_pixels=512 * 512 * 33,
        max_inference_steps=40,
        max_fps=30,
        max_prompt_chars=50,
        max_body_bytes=4096,
    )
    with live_server(settings) as live:
        yield live


CASES = [
    ({"height": 100}, "height", "multiple of 32"),
    ({"width": 70}, "width", "multiple of 32"),
    ({"height": 32}, "height", "between 64 and 512"),
    ({"height": 544}, "height", "between 64 and 512"),
    ({"width": 800}, "width", "between 64 and 768"),
    ({"num_frames": 10}, "num_frames", "8k+1"),
    ({"num_frames": 73}, "num_frames", "between 9 and 65"),
    ({"num_frames": 1}, "num_frames", "greater than or equal to 9"),
    ({"height": 512, "width": 768, "num_frames": 33}, "num_frames", "exceeds this server's cap"),
    ({"num_inference_steps": 1}, "num_inference_steps", "greater than or equal to 2"),
    ({"num_inference_steps": 41}, "num_inference_steps", "between 2 and 40"),
    ({"fps": 0}, "fps", "greater than or equal to 1"),
    ({"fps": 31}, "fps", "between 1 and 30"),
    ({"guidance_scale": 0.5}, "guidance_scale", "greater than or equal to 1"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"seed": 2**32}, "seed", "less than or equal to"),
    ({"prompt": ""}, "prompt", "at least 1 character"),
    ({"prompt": "   "}, "prompt", "more than whitespace"),
    ({"prompt": "x" * 51}, "prompt", "between 1 and 50 characters"),
    ({"negative_prompt": "x" * 51}, "negative_prompt", "between 0 and 50 characters"),
    ({"gcs_destination": "s3://bucket/a.mp4"}, "gcs_destination", "match pattern"),
    ({"gcs_destination": "gs://bucket/a.avi"}, "gcs_destination", ".mp4"),
    ({"gcs_destination": "gs://my-bucket/a.mp4"}, "gcs_destination", "no Cloud Storage output"),
    ({"height": "tall"}, "height", "valid integer"),
    ({"resolution": "4k"}, "resolution", "unknown field"),
]


@pytest.mark.parametrize(("change", "field", "text"), CASES, ids=[c[1] + ":" + str(c[0])[:30] for c in CASES])
def test_rule_violation_is_422_naming_the_field(server: LiveServer, change: dict, field: str, text: str) -> None:
    body = {"prompt": "a cat", **SMALL, **change}
    with server.client() as client:
        response = client.post("/predict", json=body, headers=HEADERS)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert payload["request_id"]
    assert [f["field"] for f in payload["fields"]] == [field]
    assert text in payload["fields"][0]["message"], payload


def test_missing_prompt_is_422_naming_prompt(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/predict", json=SMALL, headers=HEADERS)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "prompt"


def test_body_that_is_not_json_is_422(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            "/predict", content=b"{not json", headers={**HEADERS, "Content-Type": "application/json"}
        )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["message"]


def test_oversize_body_is_413(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/predict", json={"prompt": "x" * 5000}, headers=HEADERS)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_oversize_chunked_body_without_length_is_413(server: LiveServer) -> None:
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    with server.client() as client:
        response = client.post("/predict", content=chunks(), headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 413


def test_oversize_body_is_refused_before_it_is_sent(server: LiveServer) -> None:
    # A client announcing 10 MB gets its 413 without the server reading a byte of it.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {KEY}\r\nContent-Length: 10000000\r\n\r\n".encode()
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


def test_openapi_publishes_the_configured_bounds(server: LiveServer) -> None:
    with server.client() as client:
        schema = client.get("/openapi.json").json()
    height = schema["components"]["schemas"]["PredictRequest"]["properties"]["height"]
    assert (height["minimum"], height["maximum"], height["multipleOf"]) == (64, 512, 32)


def test_settings_reject_bounds_that_break_the_model_rules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MAX_HEIGHT must be a multiple of 32"):
        make_settings(tmp_path, max_height=500)
    with pytest.raises(ValueError, match="MAX_NUM_FRAMES must be of the form 8k\\+1"):
        make_settings(tmp_path, max_num_frames=64)
