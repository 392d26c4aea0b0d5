"""The job store's operations, written once over three primitives each store provides: insert a
new record, read one, and change one in a transaction. The rules of each change are the pure
transitions of serve.jobs.model; serve.jobs.store (Firestore) and serve.jobs.sqlite (a local
SQLite file) supply the primitives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from serve.jobs.model import (
    Claim,
    JobStatus,
    bounded_log,
    cancel_changes,
    claim_changes,
    fail_queued_changes,
    finish_changes,
    heartbeat_changes,
    idempotency_conflict,
    job_id_for,
    new_job,
    now,
    release_changes,
    same_request,
)

T = TypeVar("T")
Decide = Callable[[dict[str, Any] | None], tuple[dict[str, Any] | None, T]]


class JobRecords(ABC):
    """A job store: create, read, claim, heartbeat, finish once, cancel, log."""

    def __init__(self, ttl_days: int) -> None:
        self.ttl = timedelta(days=ttl_days)

    @abstractmethod
    def _insert(self, job: dict[str, Any]) -> bool:
        """Store a new job; False when its id exists already."""

    @abstractmethod
    def get(self, job_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def position(self, job: dict[str, Any]) -> int:
        """1 + the number of queued jobs created before this one (all tenants share the GPUs)."""

    @abstractmethod
    def _change(self, job_id: str, decide: Decide[T]) -> T:
        """Read the job and write the changes `decide` returns for it, in one transaction."""

    def create(
        self, tenant: str, request: dict[str, Any], idempotency_key: str | None, webhook_url: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The new job, or the existing one for the same tenant and idempotency key; and whether
        it was created now. The same key with another body (or webhook) is `idempotency_conflict`."""
        job_id = job_id_for(tenant, idempotency_key)
        doc = new_job(job_id, tenant, request, idempotency_key, webhook_url, self.ttl)
        if self._insert(doc):
            return doc, True
        existing = self.get(job_id)
        if existing is None:  # expired and deleted between the two calls: a new job after all
            return self.create(tenant, request, idempotency_key, webhook_url)
        if not same_request(existing, doc):
            raise idempotency_conflict(job_id, idempotency_key)
        return existing, False

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> tuple[Claim, dict[str, Any] | None]:
        def decide(job: dict[str, Any] | None) -> tuple[dict[str, Any] | None, tuple[Claim, dict[str, Any] | None]]:
            if job is None:
                return None, (Claim.MISSING, None)
            claim, changes = claim_changes(job, worker, lease_seconds)
            if claim is Claim.RUN and changes is not None:
                return changes, (claim, {**job, **changes, "log": None})
            return changes, (claim, job)

        return self._change(job_id, decide)

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float, step: int, total: int) -> bool:
        """Extend the lease and record progress; True when a cancel was requested."""

        def decide(job: dict[str, Any] | None) -> tuple[dict[str, Any] | None, bool]:
            if job is None:
                return None, False
            return heartbeat_changes(lease_seconds, step, total), bool(job.get("cancel_requested"))

        return self._change(job_id, decide)

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
        progress: tuple[int, int] | None = None,
    ) -> bool:
        """running -> terminal, once; False when the job was already terminal or another worker
        holds it. The job's usage (GPU seconds, bytes out) and its last progress (step, total, as
        the model counted them) are recorded in the same write."""

        def decide(job: dict[str, Any] | None) -> tuple[dict[str, Any] | None, bool]:
            if job is None:
                return None, False
            changes = finish_changes(
                job,
                worker,
                status,
                result=result,
                error=error,
                gpu_seconds=gpu_seconds,
                bytes_out=bytes_out,
                progress=progress,
            )
            return changes, changes is not None

        return self._change(job_id, decide)

    def fail_queued(self, job_id: str, error: dict[str, str]) -> None:
        """A job that never ran (e.g. it could not be queued): failed, unless already terminal."""
        self._change(job_id, lambda job: (fail_queued_changes(job, error), None))

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Queued: canceled now. Running: the worker stops it at its next step."""

        def decide(job: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            if job is None:
                return None, None
            changes = cancel_changes(job)
            return changes, {**job, **(changes or {})}

        return self._change(job_id, decide)

    def release(self, job_id: str) -> None:
        """Give a running job's lease up at once, so its redelivery need not wait for it to expire."""
        self._change(job_id, lambda job: (release_changes() if job is not None else None, None))

    def append_log(self, job_id: str, message: str) -> None:
        def decide(job: dict[str, Any] | None) -> tuple[dict[str, Any] | None, None]:
            if job is None:
                return None, None
            return {"log": bounded_log(job.get("log"), message), "updated_at": now()}, None

        self._change(job_id, decide)
