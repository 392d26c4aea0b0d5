"""The one error catalogue: every code has one status, every raise site uses a catalogued code,
and a queued /predict answers every code with the status a direct one gives."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from serve.api.errors import install_error_handlers
from serve.core.runner import RunnerError
from serve.errors import CATALOGUE, CODE_OF_HTTP_STATUS, Kind, ServeError, invalid_field
from serve.jobs.dispatch import QueuedDispatch

ROOT = Path(__file__).resolve().parents[2]
# Calls that take an error code, and the position of that argument.
_CODE_CALLS = {"ServeError": 0, "InputError": 0, "error_response": 1, "_send_error": 2}


def _raise_site_codes() -> list[tuple[str, str]]:
    """(where, code) for every literal code the server and the models use."""
    found = []
    for path in [*ROOT.glob("serve/**/*.py"), *ROOT.glob("models/**/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                index = _CODE_CALLS.get(name, -1)
                if index >= 0 and len(node.args) > index and isinstance(node.args[index], ast.Constant):
                    found.append((where, node.args[index].value))
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "code_name" for t in node.targets):
                if isinstance(node.value, ast.Constant):
                    found.append((where, node.value.value))
            elif isinstance(node, ast.Dict):  # stored job errors: {"code": "...", "message": ...}
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "code" and isinstance(value, ast.Constant):
                        found.append((where, value.value))
    return found


def test_every_raise_site_uses_a_catalogued_code() -> None:
    sites = _raise_site_codes()
    assert len(sites) >= 50  # the scan sees the raise sites (a broken scan would pass vacuously)
    unknown = [(where, code) for where, code in sites if code not in CATALOGUE]
    assert unknown == []


def test_every_catalogued_code_is_used_somewhere() -> None:
    used = {code for _, code in _raise_site_codes()} | set(CODE_OF_HTTP_STATUS.values())
    assert set(CATALOGUE) - used == set()


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_each_code_has_one_sane_status_and_kind(code: str) -> None:
    entry = CATALOGUE[code]
    error = ServeError(code, "m")
    assert error.status == entry.status and error.kind is entry.kind
    assert 400 <= entry.status < 600
    if entry.kind is Kind.CLIENT:
        assert entry.status < 500
    if entry.kind in (Kind.TRANSIENT, Kind.UPLOAD):
        assert entry.status >= 500
    if entry.retry_after is not None:
        assert entry.status == 503


def test_unknown_codes_are_refused_where_they_are_raised() -> None:
    with pytest.raises(ValueError, match=r"not in serve\.errors\.CATALOGUE"):
        ServeError("made_up", "m")


def test_runner_errors_take_their_status_from_the_catalogue() -> None:
    classes = RunnerError.__subclasses__()
    assert len(classes) >= 8
    for cls in classes:
        error = cls(7) if cls.__name__ == "QueueFull" else cls("m")
        assert error.status == CATALOGUE[error.code].status


def test_starlette_statuses_map_to_catalogued_codes_of_the_same_status() -> None:
    for status, code in CODE_OF_HTTP_STATUS.items():
        assert CATALOGUE[code].status == status


def test_invalid_field_names_the_field() -> None:
    error = invalid_field("height", "too tall")
    assert (error.status, error.code, error.fields) == (
        422,
        "invalid_request",
        [{"field": "height", "message": "too tall"}],
    )


class _FakeJobStore:
    """In-memory stand-in for the job store's `get` (the dispatch's only need of it)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.job


async def _direct(code: str) -> httpx.Response:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise ServeError(code, "direct")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get("/boom")


@pytest.mark.anyio
@pytest.mark.parametrize("code", sorted(CATALOGUE))
async def test_queued_predict_answers_each_code_with_the_direct_status(code: str) -> None:
    direct = await _direct(code)
    job = {"job_id": "j1", "status": "failed", "error": {"code": code, "message": "queued"}}
    dispatch = QueuedDispatch(submitter=None, store=_FakeJobStore(job), poll_seconds=0, deadline_seconds=5)  # type: ignore[arg-type]
    with pytest.raises(ServeError) as raised:
        await dispatch.wait("j1")
    assert raised.value.code == code
    assert raised.value.status == direct.status_code == CATALOGUE[code].status
    assert raised.value.retry_after == CATALOGUE[code].retry_after
    assert direct.headers.get("Retry-After") == (
        None if raised.value.retry_after is None else str(raised.value.retry_after)
    )


def test_a_stored_code_from_an_older_version_becomes_an_internal_error() -> None:
    job = {"job_id": "j1", "status": "failed", "error": {"code": "crashed", "message": "old"}}
    dispatch = QueuedDispatch(submitter=None, store=_FakeJobStore(job), poll_seconds=0, deadline_seconds=5)  # type: ignore[arg-type]
    with pytest.raises(ServeError) as raised:
        asyncio.run(dispatch.wait("j1"))
    assert (raised.value.code, raised.value.status) == ("internal_error", 500)
