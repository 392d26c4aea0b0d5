"""JobWorker with the real local job store (SQLite), an in-memory subscriber that records its acks
(tests/support/fakes/jobs.py) and a scripted run: the retry, dead-letter and ack decisions. The
contract suite (test_contract.py) runs the same worker on both backends through live servers."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from serve.core.runner import Task
from serve.jobs.model import JobStatus, Outcome
from serve.jobs.sqlite import Database, SqliteJobStore
from serve.jobs.worker import JobWorker
from tests.support.fakes.jobs import FakePublisher, FakeSubscriber


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _worker(
    store: SqliteJobStore,
    subscriber: FakeSubscriber,
    dead_letter: FakePublisher,
    loop: asyncio.AbstractEventLoop,
    outcomes: list[Outcome],
    runs: list[str],
    finished: list[str],
) -> JobWorker:
    async def run_job(job: dict[str, Any], on_task: Callable[[Task], None]) -> Outcome:
        runs.append(job["job_id"])
        return outcomes.pop(0)

    return JobWorker(
        store=store,
        subscriber=subscriber,
        subscription="projects/p/subscriptions/s",
        is_idle=lambda: True,
        run_job=run_job,
        loop=loop,
        dead_letter=dead_letter,
        on_finished=finished.append,
        max_attempts=3,
        lease_seconds=30,
        heartbeat_seconds=0.05,
        name="worker-1",
    )


def _store() -> SqliteJobStore:
    return SqliteJobStore(Database(Path(tempfile.mkdtemp()) / "jobs.sqlite"), ttl_days=1)


def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _run(outcomes: list[Outcome], loop: asyncio.AbstractEventLoop) -> tuple[dict[str, Any], Any, list[str], list[str]]:
    store, subscriber, dead_letter = _store(), FakeSubscriber(), FakePublisher()
    job, _ = store.create("alpha", {"prompt": "p", "num_inference_steps": 2}, None)
    subscriber.publish(job["job_id"])
    runs: list[str] = []
    finished: list[str] = []
    worker = _worker(store, subscriber, dead_letter, loop, list(outcomes), runs, finished)
    worker.start()
    try:
        _until(lambda: finished == [job["job_id"]])
    finally:
        worker.stop()
    final = store.get(job["job_id"])
    assert final is not None
    return final, (subscriber, dead_letter), runs, finished


def test_a_success_is_recorded_once_and_acked(loop: asyncio.AbstractEventLoop) -> None:
    done = Outcome(JobStatus.SUCCEEDED, result={"video_url": "u"}, gpu_seconds=2.5, bytes_out=10)
    job, (subscriber, dead_letter), runs, _ = _run([done], loop)
    assert len(runs) == 1
    assert (job["status"], job["attempts"], job["result"]) == ("succeeded", 1, {"video_url": "u"})
    assert (job["gpu_seconds"], job["bytes_out"]) == (2.5, 10)
    assert subscriber.acked == [job["job_id"]] and subscriber.nacked == [] and dead_letter.published == []


def test_a_transient_failure_is_released_and_run_again(loop: asyncio.AbstractEventLoop) -> None:
    busy = Outcome(JobStatus.FAILED, error={"code": "gpu_out_of_memory", "message": "oom"}, retry=True)
    done = Outcome(JobStatus.SUCCEEDED, result={"video_url": "u"})
    job, (subscriber, dead_letter), runs, _ = _run([busy, done], loop)
    assert job["status"] == "succeeded" and job["attempts"] == 2 and len(runs) == 2
    assert subscriber.nacked == [job["job_id"]] and subscriber.acked == [job["job_id"]]
    assert dead_letter.published == []
    assert any("will be retried" in line["message"] for line in job["log"])


def test_a_final_failure_is_not_retried(loop: asyncio.AbstractEventLoop) -> None:
    refused = Outcome(JobStatus.FAILED, error={"code": "invalid_video", "message": "not a video"})
    job, (subscriber, dead_letter), runs, _ = _run([refused], loop)
    assert (job["status"], job["error"]["code"], len(runs)) == ("failed", "invalid_video", 1)
    assert subscriber.nacked == [] and dead_letter.published == []


def test_the_last_transient_failure_dead_letters_the_job(loop: asyncio.AbstractEventLoop) -> None:
    crash = Outcome(JobStatus.FAILED, error={"code": "generation_failed", "message": "boom"}, retry=True)
    job, (subscriber, dead_letter), runs, finished = _run([crash, crash, crash], loop)
    assert (job["status"], job["attempts"], len(runs)) == ("failed", 3, 3)
    assert subscriber.nacked == [job["job_id"]] * 2 and subscriber.acked == [job["job_id"]]
    assert job["error"]["code"] == "generation_failed" and "after 3 attempts" in job["error"]["message"]
    assert dead_letter.published == [job["job_id"]] and finished == [job["job_id"]]


def test_a_crashing_run_is_treated_as_transient(loop: asyncio.AbstractEventLoop) -> None:
    store, subscriber, dead_letter = _store(), FakeSubscriber(), FakePublisher()
    job, _ = store.create("alpha", {"prompt": "p"}, None)
    subscriber.publish(job["job_id"])
    calls: list[int] = []

    async def run_job(job: dict[str, Any], on_task: Callable[[Task], None]) -> Outcome:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug in the run")
        return Outcome(JobStatus.SUCCEEDED, result={})

    worker = _worker(store, subscriber, dead_letter, loop, [], [], [])
    worker.run_job = run_job
    worker.start()
    try:
        _until(lambda: (store.get(job["job_id"]) or {}).get("status") == "succeeded")
    finally:
        worker.stop()
    assert len(calls) == 2 and subscriber.nacked == [job["job_id"]]


def test_a_finished_job_redelivered_is_acked_without_running(loop: asyncio.AbstractEventLoop) -> None:
    store, subscriber, dead_letter = _store(), FakeSubscriber(), FakePublisher()
    job, _ = store.create("alpha", {"prompt": "p"}, None)
    store.claim(job["job_id"], "earlier-worker", 30)
    store.finish(job["job_id"], "earlier-worker", JobStatus.SUCCEEDED, result={})
    subscriber.publish(job["job_id"])
    runs: list[str] = []
    worker = _worker(store, subscriber, dead_letter, loop, [], runs, [])
    worker.start()
    try:
        _until(lambda: subscriber.acked == [job["job_id"]])
    finally:
        worker.stop()
    assert runs == []
