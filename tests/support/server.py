"""The real app under uvicorn on a free loopback port, in a thread."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from models.base import Backend
from serve.api.app import create_app
from serve.config import Settings
from serve.wiring import Container, build


@dataclass
class LiveServer:
    app: FastAPI
    container: Container
    url: str

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 300), **kwargs)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.container.metrics.port}/metrics"

    def wait_until(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 120) -> None:
        self.wait_until(lambda: self.container.runner.state.value != "starting", timeout)


@contextmanager
def live_server(settings: Settings, *, backend: Backend | None = None, ready: bool = True) -> Iterator[LiveServer]:
    """The real app (built by serve.wiring, as `python -m serve` builds it) under uvicorn, with
    the root logger at the server's LOG_LEVEL (INFO by default), so every log call a request
    makes really builds its record, as in production (pytest's default would skip INFO ones)."""
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(settings.log_level.upper())
    container = build(settings, backend=backend)
    app = create_app(container)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_keep_alive=settings.keep_alive_seconds)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    live = LiveServer(app=app, container=container, url=f"http://127.0.0.1:{port}")
    try:
        live.wait_until(lambda: server.started, timeout=30)
        if ready:
            live.wait_ready()
        yield live
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        root.setLevel(old_level)
