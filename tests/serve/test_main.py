"""How `python -m serve` configures uvicorn."""

from __future__ import annotations

from pathlib import Path

from serve.__main__ import FINISH_SECONDS, uvicorn_config
from serve.api.app import create_app
from serve.wiring import build
from tests.support.settings import make_settings


def test_keep_alive_outlasts_the_load_balancer_and_access_log_is_ours(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, host="0.0.0.0", port=8080)
    config = uvicorn_config(create_app(build(settings)), settings)
    assert config.timeout_keep_alive > 600
    assert (config.host, config.port) == ("0.0.0.0", 8080)
    assert config.access_log is False
    assert config.timeout_graceful_shutdown == FINISH_SECONDS
