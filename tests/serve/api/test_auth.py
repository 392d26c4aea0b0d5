"""API keys: uniform 401s, every configured key accepted, keys never logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from serve.core.keys import KeyStore, key_id
from tests.support.server import live_server
from tests.support.settings import SMALL, make_settings

FILE_KEY = "file-key-abcdefghijklmnop"
CSV_KEYS = ("first-key-1234567890", "second-key-0987654321")


@pytest.fixture
def keyed_server(tmp_path: Path):
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# rotated weekly\n{FILE_KEY}\n\n")
    settings = make_settings(tmp_path, api_keys=",".join(CSV_KEYS), api_key_file=key_file)
    with live_server(settings) as live:
        yield live


def test_missing_key_is_401(keyed_server) -> None:
    with keyed_server.client() as client:
        response = client.post("/predict", json={"prompt": "x", **SMALL})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_wrong_key_is_401_with_the_same_body(keyed_server) -> None:
    with keyed_server.client() as client:
        missing = client.post("/predict", json={"prompt": "x", **SMALL})
        wrong = client.post("/predict", json={"prompt": "x", **SMALL}, headers={"X-API-Key": CSV_KEYS[0] + "x"})
    assert wrong.status_code == 401
    assert wrong.json()["message"] == missing.json()["message"]


@pytest.mark.parametrize("key", [*CSV_KEYS, FILE_KEY])
def test_each_configured_key_is_accepted(keyed_server, key: str) -> None:
    with keyed_server.client() as client:
        response = client.post("/predict", json={"prompt": "x", **SMALL}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text


def test_video_download_needs_a_key(keyed_server) -> None:
    with keyed_server.client() as client:
        made = client.post("/predict", json={"prompt": "x", **SMALL}, headers={"X-API-Key": FILE_KEY}).json()
        assert client.get(made["video_url"]).status_code == 401
        assert client.get(made["video_url"], headers={"X-API-Key": CSV_KEYS[1]}).status_code == 200


def test_key_never_appears_in_logs(tmp_path: Path, log_lines: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    settings = make_settings(tmp_path, api_keys=CSV_KEYS[0])
    with live_server(settings) as live, live.client() as client:
        client.post("/predict", json={"prompt": "x", **SMALL}, headers={"X-API-Key": CSV_KEYS[0]})
        client.post("/predict", json={"prompt": "x", **SMALL}, headers={"X-API-Key": CSV_KEYS[1]})
        client.get("/health", headers={"X-API-Key": CSV_KEYS[0]})
    text = "\n".join(log_lines) + capfd.readouterr().err
    access = [line for line in log_lines if '"serve.access"' in line]
    assert len(access) >= 2
    assert key_id(CSV_KEYS[0]) in text  # the key's id is logged...
    for key in CSV_KEYS:
        assert key not in text  # ...the key itself never is


def test_generates_a_key_in_local_mode_only() -> None:
    local = KeyStore.from_settings("", None, allow_generate=True)
    assert local.generated and local.verify(local.generated) == key_id(local.generated)
    with pytest.raises(RuntimeError, match="no API keys configured"):
        KeyStore.from_settings(" , ", None, allow_generate=False)


def test_verify_rejects_empty_and_non_ascii_keys() -> None:
    store = KeyStore(["k1-abcdef"])
    assert store.verify(None) is None
    assert store.verify("") is None
    assert store.verify("k1-abcdeé") is None
    assert store.verify("k1-abcdef") == key_id("k1-abcdef")
