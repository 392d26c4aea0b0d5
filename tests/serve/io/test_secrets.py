"""API keys from Secret Manager: the real client against a local REST endpoint."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes.secret_manager import FakeSecretManager
from tests.support.server import LiveServer, live_server
from tests.support.settings import SMALL, make_settings

SECRET = "projects/test-project/secrets/api-keys"
OLD, NEW, DISABLED, LATER = "old-key-aaaaaaaa", "new-key-bbbbbbbb", "disabled-key-cccc", "later-key-dddddd"


@pytest.fixture
def secret_manager() -> Iterator[FakeSecretManager]:
    fake = FakeSecretManager()
    fake.secrets[SECRET] = [(OLD, "ENABLED"), (DISABLED, "DISABLED"), (NEW, "ENABLED")]
    yield fake
    fake.close()


def _status(live: LiveServer, key: str) -> int:
    with live.client() as client:
        return client.post("/predict", json={"prompt": "x", **SMALL}, headers={"X-API-Key": key}).status_code


def _settings(tmp_path: Path, endpoint: str, **more: object):
    return make_settings(
        tmp_path, api_keys="", api_key_secret=SECRET, secret_manager_endpoint=endpoint, environment="gce", **more
    )


def test_every_enabled_version_is_a_key_and_disabled_ones_are_not(
    secret_manager: FakeSecretManager, tmp_path: Path
) -> None:
    with live_server(_settings(tmp_path, secret_manager.url)) as live:
        live.wait_until(lambda: live.container.keys.available, timeout=10)
        assert _status(live, OLD) == 200
        assert _status(live, NEW) == 200
        assert _status(live, DISABLED) == 401


def test_new_version_is_accepted_after_the_refresh_without_restart(
    secret_manager: FakeSecretManager, tmp_path: Path
) -> None:
    with live_server(_settings(tmp_path, secret_manager.url, api_key_refresh_seconds=0.2)) as live:
        live.wait_until(lambda: live.container.keys.available, timeout=10)
        assert _status(live, LATER) == 401
        secret_manager.secrets[SECRET].append((LATER, "ENABLED"))
        secret_manager.secrets[SECRET][0] = (OLD, "DISABLED")  # rotation: the old one goes
        live.wait_until(lambda: _status(live, LATER) == 200, timeout=10)
        assert _status(live, OLD) == 401


def test_endpoint_down_at_start_fails_closed(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with live_server(_settings(tmp_path, dead, api_key_refresh_seconds=0.2)) as live:
        live.wait_until(lambda: live.container.key_refresher.last_error != "not loaded yet", timeout=30)
        with live.client() as client:
            health = client.get("/health")
        assert _status(live, "") == 401
        assert _status(live, OLD) == 401
    assert health.status_code == 503
    assert health.json()["status"] == "no_api_keys"
    assert health.json()["reason"]


def test_secret_with_no_enabled_version_fails_closed(secret_manager: FakeSecretManager, tmp_path: Path) -> None:
    secret_manager.secrets[SECRET] = [(OLD, "DISABLED")]
    with live_server(_settings(tmp_path, secret_manager.url)) as live:
        live.wait_until(lambda: secret_manager.requests > 0 and live.container.key_refresher.last_error, timeout=10)
        live.wait_until(lambda: live.container.key_refresher.last_error != "not loaded yet", timeout=10)
        with live.client() as client:
            health = client.get("/health")
        assert _status(live, OLD) == 401
    assert health.status_code == 503
    assert health.json()["reason"] == "the secret has no enabled version"
