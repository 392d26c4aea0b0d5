"""The event cursor a client sends back as Last-Event-ID: what it parses to, and that anything
else (a foreign, forged or damaged id) restarts the stream from the beginning instead of failing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from serve.jobs.events import Cursor, events_since
from serve.jobs.model import describe


@pytest.mark.parametrize("text", [None, "", "x", "running.1.2", "walking.1.2.0", "running.a.2.0", "1.2.3.4.5"])
def test_an_id_that_is_not_a_cursor_starts_from_the_beginning(text: str | None) -> None:
    assert Cursor.parse(text) == Cursor()


def test_a_cursor_round_trips_and_negative_counts_are_clamped() -> None:
    assert Cursor.parse("running.3.7.0") == Cursor("running", 3, 7, False)
    assert Cursor.parse(Cursor("succeeded", 5, 12, True).id()) == Cursor("succeeded", 5, 12, True)
    assert Cursor.parse("queued.-9.0.0").lines == 0


def _job(status: str, step: int, lines: list[str], **extra: object) -> dict[str, object]:
    moment = datetime(2026, 11, 30, tzinfo=UTC)
    return {
        "job_id": "a" * 32,
        "status": status,
        "attempts": 1,
        "created_at": moment,
        "updated_at": moment,
        "progress": {"step": step, "total": 10},
        "log": [{"time": "t", "message": m} for m in lines],
        **extra,
    }


def test_eta_comes_from_the_rate_the_stream_has_seen() -> None:
    cursor = Cursor()
    jobs = [_job("running", 2, ["queued"]), _job("running", 4, ["queued"]), _job("running", 6, ["queued"])]
    etas = []
    for moment, job in zip((100.0, 101.0, 102.0), jobs, strict=True):
        for event in events_since(cursor, job, describe(job).model_dump(mode="json"), moment):
            if event.event == "progress":
                etas.append(event.data["eta_seconds"])
    assert etas == [None, 3.0, 2.0]  # 2 steps a second; 6 then 4 steps left


def test_a_failed_job_ends_with_its_error_and_nothing_after() -> None:
    cursor = Cursor()
    error = {"code": "gpu_out_of_memory", "message": "out of memory"}
    job = _job("failed", 3, ["queued", "failed"], error=error)
    events = events_since(cursor, job, describe(job).model_dump(mode="json"), 1.0)
    assert [e.event for e in events][-1] == "error" and events[-1].data == error
    assert events_since(cursor, job, describe(job).model_dump(mode="json"), 2.0) == []
