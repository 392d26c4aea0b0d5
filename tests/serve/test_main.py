"""How `python -m serve` configures uvicorn."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serve.__main__ import FINISH_SECONDS, uvicorn_config
from serve.api.app import create_app
from serve.wiring import build
from tests.support.media import free_port
from tests.support.settings import make_settings


def test_keep_alive_outlasts_the_load_balancer_and_access_log_is_ours(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, host="0.0.0.0", port=8080)
    config = uvicorn_config(create_app(build(settings)), settings)
    assert config.timeout_keep_alive > 600
    assert (config.host, config.port) == ("0.0.0.0", 8080)
    assert config.access_log is False
    assert config.timeout_graceful_shutdown == FINISH_SECONDS


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """`python -m serve` as a newcomer runs it: no API keys configured, the tiny model."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("API_KEY", "PORT", "HOST", "MODEL"))}
    root = str(Path(__file__).resolve().parents[2])
    environment = {**base, "OUTPUT_DIR": str(tmp_path / "out"), "METRICS_PORT": "0", "WARMUP": "false"}
    environment = {**environment, "PYTHONPATH": root, **env}
    return subprocess.Popen(
        [sys.executable, "-m", "serve", *args],
        cwd=tmp_path,  # no .env picked up from the checkout
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_help_prints_the_settings_and_starts_nothing(tmp_path: Path) -> None:
    port = free_port()
    process = _serve(tmp_path, "--help", PORT=str(port))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "usage: python -m serve" in out
    assert "PORT" in out and "MODEL" in out and "API_KEYS" in out and "environment" in out
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nothing took the port


def test_a_taken_port_is_one_clear_error_before_any_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _serve(tmp_path, PORT=str(port), HOST="127.0.0.1")
        out, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in err and "PORT=" in err
    assert "generated one for this run" not in out  # no key banner for a server that never ran
    assert "Traceback" not in err


def test_the_banner_suggests_a_request_that_finishes_quickly_on_a_cpu(tmp_path: Path) -> None:
    port = free_port()
    process = _serve(tmp_path, PORT=str(port), HOST="127.0.0.1")
    try:
        lines = []
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "curl" in line:
                break
        while time.monotonic() < deadline and "videogen generate" not in lines[-1]:
            lines.append(process.stdout.readline())
        banner = "".join(lines)
        assert "videogen generate" in banner and "-o fox.mp4" in banner
        key = re.search(r"X-API-Key: ([^']+)'", banner)
        body = re.search(r"-d '(\{.*\})'", banner)
        assert key and body, banner
        assert f"http://127.0.0.1:{port}/docs" in banner and f"http://127.0.0.1:{port}/ui" in banner
        request = json.loads(body.group(1))
        assert request["height"] * request["width"] * request["num_frames"] <= 256 * 384 * 25
        assert request["num_inference_steps"] <= 10
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        started = time.monotonic()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/predict", json=request, headers={"X-API-Key": key.group(1)}, timeout=300
        )
        assert answer.status_code == 200, answer.text
        print(f"\nthe banner's request took {time.monotonic() - started:.1f} s")
    finally:
        process.terminate()
        process.communicate(timeout=120)
