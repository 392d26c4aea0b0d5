"""The job worker: pulls one message at a time, only while the GPU is idle, and runs the job.

The worker keeps the message's ack deadline and the job's lease alive while it runs, and acks
after the result is stored. A redelivered message for a finished job is acked without running
it; one for a job another worker is running (lease still fresh) is not run, and comes back when
that lease ends (see _defer); a job whose worker died (lease expired) is taken over. A run whose
failure is transient is not acked, so it is delivered again; after JOB_MAX_ATTEMPTS the job is
marked failed with the reason, published to the dead-letter topic and acked. (Pub/Sub's own
dead-letter policy, 5 deliveries at the least, stays as a backstop.)
Whether to retry is decided by serve.jobs.run, from the error's kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from google.api_core import exceptions as gexc

from serve.core.runner import Task
from serve.jobs.model import Claim, JobStatus, Outcome, now
from serve.jobs.records import JobRecords

log = logging.getLogger("serve.jobs.worker")


class Publisher(Protocol):
    def publish(self, job_id: str) -> None: ...


JobRunner = Callable[[dict[str, Any], Callable[[Task], None]], Coroutine[Any, Any, Outcome]]


class JobWorker:
    """Pulls one message at a time, only while the GPU is idle, and runs it on the event loop."""

    def __init__(
        self,
        *,
        store: JobRecords,
        subscriber: Any,
        subscription: str,
        is_idle: Callable[[], bool],
        run_job: JobRunner,
        loop: asyncio.AbstractEventLoop,
        dead_letter: Publisher,
        on_finished: Callable[[str], None] = lambda job_id: None,
        on_started: Callable[[dict[str, Any]], None] = lambda job: None,
        max_attempts: int,
        lease_seconds: float = 60,
        heartbeat_seconds: float = 5,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.subscriber = subscriber
        self.subscription = subscription
        self.is_idle = is_idle
        self.run_job = run_job
        self.loop = loop
        self.dead_letter = dead_letter
        self.on_finished = on_finished
        self.on_started = on_started
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="job-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _main(self) -> None:
        while not self._stop.is_set():
            if not self.is_idle():
                self._stop.wait(0.2)
                continue
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": 1}, timeout=2
                )
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                continue
            except Exception as exc:  # keep the worker alive through transient errors
                log.error("pull failed", extra={"error": str(exc)})
                self._stop.wait(2)
                continue
            for received in response.received_messages:
                try:
                    self._handle(received)
                except Exception as exc:  # e.g. Firestore unreachable: Pub/Sub delivers it again
                    log.error("job handling failed; message released", exc_info=exc)
                    with contextlib.suppress(Exception):
                        self._nack(received.ack_id)

    def _ack(self, ack_id: str) -> None:
        self.subscriber.acknowledge(request={"subscription": self.subscription, "ack_ids": [ack_id]})

    def _nack(self, ack_id: str) -> None:
        self.subscriber.modify_ack_deadline(
            request={"subscription": self.subscription, "ack_ids": [ack_id], "ack_deadline_seconds": 0}
        )

    def _handle(self, received: Any) -> None:
        job_id = received.message.data.decode()
        claim, job = self.store.claim(job_id, self.name, self.lease_seconds)
        if claim is Claim.BUSY and job is not None:
            self._defer(received.ack_id, job)
            return
        if claim is not Claim.RUN:
            log.info("job message acked without running", extra={"job_id": job_id, "claim": claim.value})
            self._ack(received.ack_id)
            return
        assert job is not None
        attempt = job["attempts"]
        if attempt > self.max_attempts:  # its workers died every time: do not try again
            error = {"code": "worker_lost", "message": f"no worker finished it in {self.max_attempts} attempts"}
            self._give_up(received.ack_id, job_id, error)
            return
        log.info("job started", extra={"job_id": job_id, "attempt": attempt, "worker": self.name})
        self.on_started(job)
        holder: dict[str, Task] = {}
        done = threading.Event()
        keeper = threading.Thread(
            target=self._keep_alive, args=(received.ack_id, job_id, holder, done), name="job-lease", daemon=True
        )
        keeper.start()
        try:
            future = asyncio.run_coroutine_threadsafe(
                self.run_job(job, lambda task: holder.update(task=task)), self.loop
            )
            outcome = future.result()
        except Exception as exc:  # the run itself crashed (a bug): let Pub/Sub deliver it again
            log.error("job run crashed", exc_info=exc, extra={"job_id": job_id})
            message = f"{type(exc).__name__}: {exc}"
            outcome = Outcome(JobStatus.FAILED, error={"code": "generation_failed", "message": message}, retry=True)
        finally:
            done.set()
            keeper.join()
        if outcome.retry and attempt < self.max_attempts:
            self.store.append_log(job_id, f"attempt {attempt} failed ({outcome.error}); will be retried")
            self.store.release(job_id)
            self._nack(received.ack_id)
            return
        if outcome.retry:  # the last attempt failed too
            assert outcome.error is not None
            error = {"code": outcome.error["code"], "message": f"{outcome.error['message']} (after {attempt} attempts)"}
            self._give_up(received.ack_id, job_id, error)
            return
        task = holder.get("task")
        final = self.store.finish(
            job_id,
            self.name,
            outcome.status,
            result=outcome.result,
            error=outcome.error,
            gpu_seconds=outcome.gpu_seconds,
            bytes_out=outcome.bytes_out,
            progress=(task.step, task.total) if task is not None and task.steps_total else None,
        )
        log.info("job finished", extra={"job_id": job_id, "status": outcome.status.value, "recorded": final})
        self._ack(received.ack_id)
        if final:
            self.on_finished(job_id)

    def _defer(self, ack_id: str, job: dict[str, Any]) -> None:
        """Another worker holds the job's lease. Its message deadline and lease are renewed together,
        so if it died this delivery may be the job's only way back: never ack it; let it come back
        when the lease ends, to find the job finished (then acked) or free to take over."""
        lease = job.get("lease_expires_at")
        seconds = (lease - now()).total_seconds() if lease is not None else 0.0
        delay = min(600, max(1, math.ceil(seconds) + 1))  # Pub/Sub's ack deadline is at most 600 s
        log.info("job busy elsewhere; message deferred", extra={"job_id": job["job_id"], "seconds": delay})
        self.subscriber.modify_ack_deadline(
            request={"subscription": self.subscription, "ack_ids": [ack_id], "ack_deadline_seconds": delay}
        )

    def _give_up(self, ack_id: str, job_id: str, error: dict[str, str]) -> None:
        """Failed for good: recorded with the reason, published to the dead-letter topic, acked."""
        self.store.finish(job_id, self.name, JobStatus.FAILED, error=error)
        self.dead_letter.publish(job_id)
        log.error("job dead-lettered", extra={"job_id": job_id, "code": error["code"], "reason": error["message"]})
        self._ack(ack_id)
        self.on_finished(job_id)

    def _keep_alive(self, ack_id: str, job_id: str, holder: dict[str, Task], done: threading.Event) -> None:
        """Extend the message's deadline and the job's lease; pass a cancel request to the task."""
        while not done.wait(self.heartbeat_seconds):
            task = holder.get("task")
            try:
                self.subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": [ack_id],
                        "ack_deadline_seconds": int(self.lease_seconds),
                    }
                )
                canceled = self.store.heartbeat(
                    job_id, self.name, self.lease_seconds, task.step if task else 0, task.total if task else 0
                )
            except Exception as exc:  # a missed heartbeat is not fatal; the lease has slack
                log.warning("heartbeat failed", extra={"job_id": job_id, "error": str(exc)})
                continue
            if canceled and task is not None and not task.cancel.is_set():
                log.info("cancel requested; stopping at the next step", extra={"job_id": job_id})
                task.cancel.set()
