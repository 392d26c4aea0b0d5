"""The job API as `make run` serves it: ENVIRONMENT=local defaults, no cloud, no emulator and no
job setting at all; the jobs live in OUTPUT_DIR/jobs.sqlite. A server killed with SIGKILL mid-job
and started again finishes the job, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.media import free_port
from tests.support.settings import KEY

ROOT = Path(__file__).resolve().parents[3]
HEADERS = {"X-API-Key": KEY}


def _serve(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JOB", "PUBSUB", "FIRESTORE", "ENVIRONMENT"))}
    env = {
        **base,
        "API_KEYS": KEY,
        "PORT": str(port),
        "METRICS_PORT": "0",
        "OUTPUT_DIR": str(tmp_path / "out"),
        "JOB_LEASE_SECONDS": "10",  # how soon a restarted server may take the killed one's job over
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen([sys.executable, "-m", "serve"], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)


def _until_healthy(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("the server never became healthy")


def _job(url: str, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{url}/jobs/{job_id}", headers=HEADERS, timeout=10).json()  # type: ignore[no-any-return]


def test_a_job_survives_sigkill_and_completes_once_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _serve(tmp_path, port)
    try:
        _until_healthy(url)
        body = {"prompt": "interrupted", "height": 384, "width": 640, "num_frames": 49, "num_inference_steps": 40}
        submitted = httpx.post(f"{url}/jobs", json=body, headers=HEADERS, timeout=30)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        deadline = time.monotonic() + 60
        while _job(url, job_id)["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert (tmp_path / "out" / "jobs.sqlite").exists()
    second = _serve(tmp_path, port)
    try:
        _until_healthy(url)
        assert _job(url, job_id)["status"] == "running"  # the killed server's, until its lease ends
        deadline = time.monotonic() + 240
        while (done := _job(url, job_id))["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, done
            time.sleep(0.5)
        log = httpx.get(f"{url}/jobs/{job_id}/log", headers=HEADERS, timeout=10).json()["lines"]
    finally:
        second.terminate()
        second.wait(60)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    messages = [line["message"] for line in log]
    assert any("(took over)" in m for m in messages) and messages.count("succeeded") == 1
