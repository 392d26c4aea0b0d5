"""One GPU runner: the event loop stays free, the queue is bounded, leavers never reach the model."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx

from models.base import GenerationRequest, StepCallback, Video
from tests.support.backends import GatedBackend
from tests.support.server import live_server
from tests.support.settings import KEY, SMALL, make_settings

HEADERS = {"X-API-Key": KEY}


def _post_in_thread(url: str, prompt: str, results: dict[str, httpx.Response]) -> threading.Thread:
    def run() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            results[prompt] = client.post("/predict", json={"prompt": prompt, **SMALL}, headers=HEADERS)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_health_answers_fast_while_a_generation_runs(tmp_path: Path) -> None:
    backend = GatedBackend()
    with live_server(make_settings(tmp_path), backend=backend) as live:
        results: dict[str, httpx.Response] = {}
        worker = _post_in_thread(live.url, "slow", results)
        assert backend.started.wait(10)
        durations = []
        with live.client() as client:
            for _ in range(20):
                started = time.perf_counter()
                response = client.get("/health")
                durations.append(time.perf_counter() - started)
                assert response.status_code == 200
                assert response.json()["status"] == "busy"
        backend.release.set()
        worker.join(30)
    assert max(durations) < 0.1, durations
    assert results["slow"].status_code == 200


def test_full_queue_gets_503_with_retry_after(tmp_path: Path) -> None:
    backend = GatedBackend()
    with live_server(make_settings(tmp_path, queue_size=1), backend=backend) as live:
        results: dict[str, httpx.Response] = {}
        running = _post_in_thread(live.url, "running", results)
        assert backend.started.wait(10)
        queued = _post_in_thread(live.url, "queued", results)
        live.wait_until(lambda: live.container.runner.depth == 1, timeout=10)
        with live.client() as client:
            rejected = client.post("/predict", json={"prompt": "one too many", **SMALL}, headers=HEADERS)
        backend.release.set()
        running.join(30)
        queued.join(30)
    assert rejected.status_code == 503
    assert rejected.json()["error"] == "busy"
    assert int(rejected.headers["Retry-After"]) >= 1
    assert results["running"].status_code == 200
    assert results["queued"].status_code == 200
    assert backend.prompts == ["running", "queued"]


def test_queued_request_whose_client_leaves_never_reaches_the_model(tmp_path: Path) -> None:
    backend = GatedBackend()
    with live_server(make_settings(tmp_path, queue_size=2), backend=backend) as live:
        results: dict[str, httpx.Response] = {}
        running = _post_in_thread(live.url, "running", results)
        assert backend.started.wait(10)
        host, port = live.url.removeprefix("http://").split(":")
        body = b'{"prompt": "abandoned", "height": 64, "width": 96, "num_frames": 9, "num_inference_steps": 2}'
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            live.wait_until(lambda: live.container.runner.depth == 1, timeout=10)
        # The socket is closed: the server notices and withdraws the request from the queue.
        live.wait_until(lambda: live.container.runner.depth == 0, timeout=10)
        backend.release.set()
        running.join(30)
        live.wait_until(lambda: live.container.runner.current is None, timeout=10)
    assert backend.prompts == ["running"]
    assert results["running"].status_code == 200


def test_generation_past_its_deadline_is_504_and_the_server_keeps_serving(tmp_path: Path) -> None:
    backend = GatedBackend(step_seconds=0.1)
    backend.release.set()
    settings = make_settings(tmp_path, generation_timeout_seconds=0.6)
    with live_server(settings, backend=backend) as live, live.client() as client:
        slow = client.post("/predict", json={"prompt": "long", **SMALL, "num_inference_steps": 20}, headers=HEADERS)
        quick = client.post("/predict", json={"prompt": "short", **SMALL}, headers=HEADERS)
        health = client.get("/health")
    assert slow.status_code == 504
    assert slow.json()["error"] == "generation_timeout"
    assert "step" in slow.json()["message"]
    assert quick.status_code == 200
    assert health.status_code == 200


def test_gpu_out_of_memory_fails_that_request_and_the_server_keeps_serving(tmp_path: Path) -> None:
    import torch

    class OutOfMemoryOnce(GatedBackend):
        def generate(self, request: GenerationRequest, on_step: StepCallback, *, output: Path) -> Video:
            if request.prompt == "too big":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return super().generate(request, on_step, output=output)

    backend = OutOfMemoryOnce()
    backend.release.set()
    with live_server(make_settings(tmp_path), backend=backend) as live, live.client() as client:
        failed = client.post("/predict", json={"prompt": "too big", **SMALL}, headers={"X-API-Key": KEY})
        health = client.get("/health")
        after = client.post("/predict", json={"prompt": "fits", **SMALL}, headers={"X-API-Key": KEY})
    assert failed.status_code == 503 and failed.json()["error"] == "gpu_out_of_memory"
    assert "Retry-After" in failed.headers
    assert health.status_code == 200
    assert after.status_code == 200
