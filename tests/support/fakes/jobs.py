"""In-memory fakes of the job backend's seams, for unit tests of the worker and the job run:
a job store with the JobStore's semantics (claim, lease, finish once), a Pub/Sub subscriber with
ack / nack-redelivery, a publisher. The emulator tests cover the real ones."""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from serve.jobs.model import Claim, JobStatus, bounded_log, is_terminal, now


class FakeJobStore:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def create(
        self, tenant: str, request: dict[str, Any], idempotency_key: str | None = None, webhook_url: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        job_id = uuid.uuid4().hex
        self.jobs[job_id] = {
            "job_id": job_id,
            "tenant": tenant,
            "status": "queued",
            "request": request,
            "attempts": 0,
            "worker": None,
            "lease_expires_at": None,
            "cancel_requested": False,
            "created_at": now(),
            "updated_at": now(),
            "started_at": None,
            "finished_at": None,
            "log": bounded_log([], "queued"),
            "result": None,
            "error": None,
        }
        return dict(self.jobs[job_id]), True

    def get(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        return dict(job) if job else None

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> tuple[Claim, dict[str, Any] | None]:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return Claim.MISSING, None
            if is_terminal(job["status"]):
                return Claim.DONE, dict(job)
            if job["status"] == "running" and job["lease_expires_at"] > now():
                return Claim.BUSY, dict(job)
            job.update(
                status="running",
                worker=worker,
                attempts=job["attempts"] + 1,
                lease_expires_at=now() + timedelta(seconds=lease_seconds),
                log=bounded_log(job["log"], f"attempt {job['attempts'] + 1}"),
            )
            return Claim.RUN, dict(job)

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float, step: int, total: int) -> bool:
        job = self.jobs[job_id]
        job["progress"] = {"step": step, "total": total}
        return bool(job["cancel_requested"])

    def finish(
        self,
        job_id: str,
        worker: str,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
        gpu_seconds: float = 0.0,
        bytes_out: int = 0,
    ) -> bool:
        with self._lock:
            job = self.jobs[job_id]
            if is_terminal(job["status"]) or job["worker"] != worker:
                return False
            job.update(status=status.value, result=result, error=error, gpu_seconds=gpu_seconds, bytes_out=bytes_out)
            return True

    def fail_queued(self, job_id: str, error: dict[str, str]) -> None:
        self.jobs[job_id].update(status="failed", error=error)

    def release(self, job_id: str) -> None:
        self.jobs[job_id]["lease_expires_at"] = now() - timedelta(seconds=1)

    def append_log(self, job_id: str, message: str) -> None:
        job = self.jobs[job_id]
        job["log"] = bounded_log(job["log"], message)


@dataclass
class FakeSubscriber:
    """Pub/Sub's pull/ack/modify_ack_deadline; a nack (deadline 0) delivers the message again."""

    messages: deque[str] = field(default_factory=deque)
    acked: list[str] = field(default_factory=list)
    nacked: list[str] = field(default_factory=list)
    outstanding: dict[str, str] = field(default_factory=dict)

    def publish(self, job_id: str) -> None:
        self.messages.append(job_id)

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        received = []
        if self.messages:
            job_id = self.messages.popleft()
            ack_id = uuid.uuid4().hex
            self.outstanding[ack_id] = job_id
            received.append(SimpleNamespace(ack_id=ack_id, message=SimpleNamespace(data=job_id.encode())))
        else:
            threading.Event().wait(0.01)
        return SimpleNamespace(received_messages=received)

    def acknowledge(self, request: dict[str, Any]) -> None:
        for ack_id in request["ack_ids"]:
            self.acked.append(self.outstanding.pop(ack_id))

    def modify_ack_deadline(self, request: dict[str, Any]) -> None:
        if request["ack_deadline_seconds"] == 0:
            for ack_id in request["ack_ids"]:
                job_id = self.outstanding.pop(ack_id)
                self.nacked.append(job_id)
                self.messages.append(job_id)


@dataclass
class FakePublisher:
    published: list[str] = field(default_factory=list)

    def publish(self, job_id: str) -> None:
        self.published.append(job_id)
