"""Schemathesis against /openapi.json over real HTTP, for both tasks and the job API, headers
(X-Request-ID) included: no 5xx, no response off the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.support.jobs import ALPHA, JobsEnv
from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, make_settings

# The real tiny models with small bounds, so that valid requests finish in well under a second.
SMALL_BOUNDS: dict[str, Any] = {
    "max_height": 128,
    "max_width": 128,
    "max_num_frames": 17,
    "max_inference_steps": 3,
    "max_prompt_chars": 200,
    "queue_size": 4,
    # Generated `image` URLs that pass the URL rules are refused or unreachable, quickly.
    "fetch_timeout_seconds": 2,
}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("fuzz"), **SMALL_BOUNDS)) as live:
        yield live


def _fuzz(live: LiveServer, key: str, expected: set[str], examples: int) -> None:
    # Not checked: that every schema-valid body is accepted. num_frames = 8k+1, the cap on
    # height x width x frames, URL reachability and job ids cannot be written in JSON Schema; the
    # server answers them with a documented 4xx.
    api = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.label for op in operations} >= expected
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": key}, excluded_checks=[positive_data_acceptance])

        check()


def test_text_to_video_api_conforms_to_its_schema(fuzz_server: LiveServer) -> None:
    _fuzz(fuzz_server, KEY, {"POST /predict", "GET /health", "GET /videos/{name}"}, 60)


def test_lipsync_api_conforms_to_its_schema(tmp_path: Path) -> None:
    # Production fetch rules (https only, public addresses): generated URLs are refused or
    # unreachable, quickly; the point is that no input shape makes a 5xx.
    settings = make_settings(tmp_path, model="latentsync-tiny", warmup=False, fetch_timeout_seconds=2)
    with live_server(settings) as live:
        _fuzz(live, KEY, {"POST /predict", "GET /videos/{name}"}, 40)


def test_job_api_conforms_to_its_schema(jobs_env: JobsEnv, tmp_path: Path) -> None:
    settings = jobs_env.settings(tmp_path, jobs_worker=False, **SMALL_BOUNDS)
    with live_server(settings) as live:
        expected = {"POST /jobs", "POST /process", "GET /jobs/{job_id}", "GET /result/{job_id}"}
        expected |= {"POST /jobs/{job_id}/cancel", "GET /jobs/{job_id}/log", "GET /status/{job_id}"}
        _fuzz(live, ALPHA, expected, 30)


def test_fuzz_outputs_stay_in_the_output_directory(fuzz_server: LiveServer) -> None:
    root = Path(fuzz_server.container.store.root)
    assert all(path.parent in (root, root / ".tmp") for path in root.rglob("*"))
    assert list((root / ".tmp").iterdir()) == []
