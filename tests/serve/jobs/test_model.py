"""A job's status vocabulary and its bounded log."""

from __future__ import annotations

from serve.jobs.model import MAX_LOG_LINES, JobStatus, bounded_log


def test_terminal_statuses() -> None:
    assert {s for s in JobStatus if s.is_terminal()} == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}


def test_the_log_keeps_its_first_line_and_the_newest() -> None:
    lines = bounded_log([], "queued")
    for attempt in range(1, 1000):
        lines = bounded_log(lines, f"attempt {attempt}")
    assert len(lines) == MAX_LOG_LINES
    assert lines[0]["message"] == "queued" and "lines dropped" in lines[1]["message"]
    assert lines[-1]["message"] == "attempt 999" and lines[2]["message"] == f"attempt {999 - MAX_LOG_LINES + 3}"


def test_a_short_log_is_untouched() -> None:
    lines = bounded_log(bounded_log([], "queued"), "attempt 1", "succeeded")
    assert [line["message"] for line in lines] == ["queued", "attempt 1", "succeeded"]
