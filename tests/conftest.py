"""Shared fixtures; the helpers they use live in tests/support/."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.config import Settings
from serve.obs.logs import make_handler
from tests.support.emulators import GcsEmulator, start_emulator, start_fake_gcs
from tests.support.jobs import JobsEnv, make_jobs_env, make_sqlite_jobs_env
from tests.support.server import LiveServer, live_server
from tests.support.settings import make_settings


class _LineStream:
    """A stream that collects whole lines into a list as they are written."""

    def __init__(self, lines: list[str]) -> None:
        self.lines, self.pending = lines, ""

    def write(self, text: str) -> None:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if line.strip():
                self.lines.append(line)

    def flush(self) -> None:
        pass


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log record of the test, formatted by the server's own handler."""
    lines: list[str] = []
    handler = make_handler(_LineStream(lines))  # type: ignore[arg-type]
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


@pytest.fixture
def anyio_backend() -> str:
    """The server runs on asyncio (uvicorn); anyio's tests run there only (selenium brings trio,
    which anyio would otherwise add as a second backend)."""
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def tiny_server(settings: Settings) -> Iterator[LiveServer]:
    with live_server(settings) as live:
        yield live


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


@pytest.fixture
def jobs_env(gcp_emulators: dict[str, str]) -> JobsEnv:
    """The GCP job backend on the emulators (tests of what only it has: subscription filters)."""
    return make_jobs_env(gcp_emulators)


@pytest.fixture(params=["sqlite", "gcp"])
def any_jobs_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> JobsEnv:
    """Each job backend in turn: the local SQLite file, then Pub/Sub + Firestore on the emulators.
    The job contract suite runs on both."""
    if request.param == "sqlite":
        return make_sqlite_jobs_env(tmp_path_factory.mktemp("jobs"))
    return make_jobs_env(request.getfixturevalue("gcp_emulators"))
