"""Where the upstream LatentSync reference data lives (../shared/fixtures/latentsync, beside the
checkout). Tests read it there and never copy it; outside this project's CI the folder may be
absent and the tests skip, but under CI=true a missing folder is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "latentsync"


def fixtures() -> Path:
    if FIXTURES.is_dir():
        return FIXTURES
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the LatentSync reference fixtures are missing at {FIXTURES}")
    pytest.skip(f"LatentSync reference fixtures not present at {FIXTURES} (only this project's workplace has them)")
