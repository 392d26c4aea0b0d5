"""SIGTERM to `python -m serve` mid-generation: drain (new work 503), finish, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.media import free_port
from tests.support.settings import KEY, SMALL

ROOT = Path(__file__).resolve().parents[2]
HEADERS = {"X-API-Key": KEY}
SLOW = {"prompt": "long", "height": 384, "width": 640, "num_frames": 49, "num_inference_steps": 40}
# Denoising that outlasts a 0.5 s drain limit on any machine (the tiny model takes ~6 ms a step on a
# CPU, so 40 steps can finish before the signal lands, and a stop only happens at a step).
LONG_STEPS = 1000  # the schema's own ceiling


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str

    def output(self) -> str:
        return self.process.stdout.read().decode() if self.process.stdout else ""


@contextmanager
def serve_process(tmp_path: Path, **env: str) -> Iterator[Server]:
    port = free_port()
    environment = {
        **os.environ,
        "API_KEYS": KEY,
        "PORT": str(port),
        "METRICS_PORT": "0",
        "OUTPUT_DIR": str(tmp_path / "out"),
        "MODEL": "ltx-video-tiny",
        "DEVICE": "cpu",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "serve"], cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "server never became healthy"
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _slow_request(server: Server, result: dict[str, httpx.Response], **body: object) -> threading.Thread:
    def post() -> None:
        result["slow"] = httpx.post(f"{server.url}/predict", json={**SLOW, **body}, headers=HEADERS, timeout=300)

    thread = threading.Thread(target=post)
    thread.start()
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/health", timeout=1).json()["status"] != "busy":
        assert time.monotonic() < deadline, "generation never started"
        time.sleep(0.05)
    return thread


def test_sigterm_drains_lets_the_generation_finish_and_exits_0(tmp_path: Path) -> None:
    with serve_process(tmp_path) as server:
        result: dict[str, httpx.Response] = {}
        client = _slow_request(server, result)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        refused = httpx.post(f"{server.url}/predict", json={"prompt": "late", **SMALL}, headers=HEADERS, timeout=30)
        health = httpx.get(f"{server.url}/health", timeout=5)
        client.join(300)
        exit_code = server.process.wait(60)
        output = server.output()
    assert refused.status_code == 503 and refused.json()["error"] == "draining", output[-2000:]
    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert result["slow"].status_code == 200, output[-2000:]
    assert Path(result["slow"].json()["video_path"]).stat().st_size > 0
    assert exit_code == 0, output[-2000:]
    assert "drained; shutting down" in output and "Application shutdown complete" in output


def test_sigterm_past_the_drain_limit_fails_the_generation_cleanly(tmp_path: Path) -> None:
    with serve_process(tmp_path, DRAIN_TIMEOUT_SECONDS="0.5", MAX_INFERENCE_STEPS=str(LONG_STEPS)) as server:
        result: dict[str, httpx.Response] = {}
        client = _slow_request(server, result, num_inference_steps=LONG_STEPS)
        server.process.send_signal(signal.SIGTERM)
        client.join(120)
        exit_code = server.process.wait(60)
        output = server.output()
    response = result["slow"]
    assert response.status_code == 503, output[-2000:]
    assert response.json()["error"] == "shutting_down" and "Retry-After" in response.headers
    assert exit_code == 0, output[-2000:]
    assert "drain limit reached" in output
