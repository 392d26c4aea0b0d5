"""The Pub/Sub and Firestore emulators of the installed Google Cloud CLI, on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers import free_port


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
