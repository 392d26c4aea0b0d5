"""startup/shutdown.sh against a live server and a local metadata server; ShellCheck on every script."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import GatedBackend
from tests.support.fakes.metadata import FakeMetadataServer
from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, SMALL, make_settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "startup" / "shutdown.sh"


@pytest.fixture
def metadata() -> Iterator[FakeMetadataServer]:
    fake = FakeMetadataServer({"instance/preempted": "TRUE"})
    yield fake
    fake.close()


def _run_script(live: LiveServer, metadata: FakeMetadataServer, **env: str) -> subprocess.Popen[str]:
    port = live.url.rsplit(":", 1)[1]
    environment = {**os.environ, "PORT": port, "METADATA_BASE_URL": metadata.base_url, **env}
    return subprocess.Popen(
        ["bash", str(SCRIPT)], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _start_generation(live: LiveServer, results: dict[str, httpx.Response]) -> threading.Thread:
    def post() -> None:
        with live.client() as client:
            results["running"] = client.post(
                "/predict", json={"prompt": "running", **SMALL}, headers={"X-API-Key": KEY}
            )

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def test_drains_and_waits_for_the_running_generation(tmp_path: Path, metadata: FakeMetadataServer) -> None:
    backend = GatedBackend()
    with live_server(make_settings(tmp_path), backend=backend) as live:
        results: dict[str, httpx.Response] = {}
        worker = _start_generation(live, results)
        assert backend.started.wait(10)
        script = _run_script(live, metadata)
        live.wait_until(lambda: live.container.runner.draining, timeout=10)
        with live.client() as client:
            refused = client.post("/predict", json={"prompt": "late", **SMALL}, headers={"X-API-Key": KEY})
        time.sleep(1)
        assert script.poll() is None  # still waiting for the running generation
        backend.release.set()
        output, _ = script.communicate(timeout=30)
        worker.join(30)
    assert script.returncode == 0, output
    assert "stage=drain result=requested limit_seconds=25 in_flight=1" in output  # preempted: short limit
    assert "stage=drain result=drained" in output
    assert refused.status_code == 503 and refused.json()["error"] == "draining"
    assert results["running"].status_code == 200


def test_gives_up_at_the_limit_and_says_so(tmp_path: Path, metadata: FakeMetadataServer) -> None:
    metadata.values["instance/preempted"] = "FALSE"
    backend = GatedBackend()
    with live_server(make_settings(tmp_path), backend=backend) as live:
        results: dict[str, httpx.Response] = {}
        worker = _start_generation(live, results)
        assert backend.started.wait(10)
        script = _run_script(live, metadata, STOP_LIMIT_SECONDS="1")
        output, _ = script.communicate(timeout=30)
        backend.release.set()
        worker.join(30)
    assert script.returncode == 0, output
    assert "limit_seconds=1" in output
    assert "stage=drain result=limit_reached" in output and "in_flight=1" in output


def test_no_server_is_not_an_error(metadata: FakeMetadataServer) -> None:
    environment = {**os.environ, "PORT": "1", "METADATA_BASE_URL": metadata.base_url}
    done = subprocess.run(["bash", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "stage=drain result=no_server" in done.stdout


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is missing; `make test` installs it from Debian's packages")
        pytest.skip("shellcheck is not installed (make test installs it with apt-get where it can)")
    scripts = sorted(str(p) for folder in ("startup", "terraform", "bench") for p in (ROOT / folder).glob("*.sh"))
    assert scripts
    done = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
