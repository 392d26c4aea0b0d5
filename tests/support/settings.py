"""Settings for tests: the server's production defaults (ENVIRONMENT=gce: keys must be given, none is
generated; LOG_LEVEL=INFO, which tests/support/server.py applies), a test key, a temporary output
folder and the tiny model on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serve.config import Settings

KEY = "test-key-0123456789abcdef"
# A text-to-video request small enough for the tiny model on a CPU.
SMALL = {"height": 64, "width": 96, "num_frames": 9, "num_inference_steps": 2}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": KEY,
        "output_dir": tmp_path / "outputs",
        "metrics_port": 0,
        "model": "ltx-video-tiny",
        "model_path": None,
        "device": "cpu",
        "environment": "gce",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
