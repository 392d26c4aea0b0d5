"""Schemathesis against /openapi.json over real HTTP: no 5xx, no response off the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, make_settings


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # The real tiny model with small bounds, so that valid requests finish in well under a second.
    config = make_settings(
        tmp_path_factory.mktemp("fuzz"),
        max_height=128,
        max_width=128,
        max_num_frames=17,
        max_inference_steps=3,
        max_prompt_chars=200,
        queue_size=4,
    )
    with live_server(config) as live:
        yield live


def test_api_conforms_to_its_schema(fuzz_server: LiveServer) -> None:
    # Not checked: that every schema-valid body is accepted. num_frames = 8k+1 and the cap on
    # height x width x frames cannot be written in JSON Schema; the server answers them with
    # a documented 422 naming the field.
    api = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /predict", "GET /health", "GET /videos/{name}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": KEY}, excluded_checks=[positive_data_acceptance])

        check()


def test_fuzz_outputs_stay_in_the_output_directory(fuzz_server: LiveServer) -> None:
    root = Path(fuzz_server.container.store.root)
    assert all(path.parent == root for path in root.rglob("*"))
