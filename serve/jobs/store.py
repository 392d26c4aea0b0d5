"""Job records in Firestore.

A job document moves queued -> running -> succeeded | failed | canceled, each change in a
Firestore transaction, so whatever the number of Pub/Sub deliveries a job starts and ends once.
Its log is bounded (serve.jobs.model.MAX_LOG_LINES). Usage is counted here once: the transaction
that ends a job writes its GPU seconds and bytes out onto the job, and the usage report
(`python -m serve.cli.usage`) sums exactly those fields.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from serve.errors import ServeError
from serve.jobs.model import Claim, JobStatus, bounded_log, is_terminal, log_line, now


def request_digest(request: dict[str, Any], webhook_url: str | None) -> str:
    """What makes two submissions the same request."""
    canonical = json.dumps({"request": request, "webhook_url": webhook_url}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class JobStore:
    """Job documents in one Firestore collection."""

    def __init__(self, client: firestore.Client, collection: str, ttl_days: int) -> None:
        self.client = client
        self.jobs = client.collection(collection)
        self.ttl = timedelta(days=ttl_days)

    def create(
        self, tenant: str, request: dict[str, Any], idempotency_key: str | None, webhook_url: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The new job, or the existing one for the same tenant and idempotency key; and whether
        it was created now. The same key with another body (or webhook) is `idempotency_conflict`:
        returning the old job would silently drop the new request."""
        digest = request_digest(request, webhook_url)
        if idempotency_key:
            job_id = hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()[:32]
        else:
            job_id = uuid.uuid4().hex
        created = now()
        doc = {
            "job_id": job_id,
            "tenant": tenant,
            "status": JobStatus.QUEUED.value,
            "request": request,
            "idempotency_key": idempotency_key,
            "request_digest": digest,
            "webhook_url": webhook_url,
            "created_at": created,
            "updated_at": created,
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "worker": None,
            "lease_expires_at": None,
            "cancel_requested": False,
            "progress": {"step": 0, "total": request.get("num_inference_steps", 0)},
            "result": None,
            "error": None,
            "log": [log_line("queued")],
            "expire_at": created + self.ttl,  # a Firestore TTL policy on this field deletes old jobs
        }
        try:
            self.jobs.document(job_id).create(doc)
        except gexc.AlreadyExists:
            existing = self.get(job_id)
            if existing is None:  # expired and deleted between the two calls: a new job after all
                return self.create(tenant, request, idempotency_key, webhook_url)
            if existing.get("request_digest", digest) != digest:
                raise ServeError(
                    "idempotency_conflict",
                    f"idempotency_key {idempotency_key!r} was used for job {job_id} with another body; "
                    "use a new key for a new request",
                ) from None
            return existing, False
        return doc, True

    def get(self, job_id: str) -> dict[str, Any] | None:
        snapshot = self.jobs.document(job_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def position(self, job: dict[str, Any]) -> int:
        """1 + the number of queued jobs created before this one (all tenants share the GPUs)."""
        query = self.jobs.where(filter=firestore.FieldFilter("status", "==", "queued")).where(
            filter=firestore.FieldFilter("created_at", "<", job["created_at"])
        )
        result = query.count().get()
        return int(result[0][0].value) + 1

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> tuple[Claim, dict[str, Any] | None]:
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> tuple[Claim, dict[str, Any] | None]:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return Claim.MISSING, None
            job = snapshot.to_dict()
            if is_terminal(job["status"]):
                return Claim.DONE, job
            lease = job.get("lease_expires_at")
            if job["status"] == JobStatus.RUNNING and lease is not None and lease > now():
                return Claim.BUSY, job
            if job["cancel_requested"]:
                transaction.update(ref, self._terminal(job, JobStatus.CANCELED, "canceled before it ran"))
                return Claim.DONE, job
            taken_over = job["status"] == JobStatus.RUNNING
            changes = {
                "status": JobStatus.RUNNING.value,
                "worker": worker,
                "attempts": job["attempts"] + 1,
                "started_at": job["started_at"] or now(),
                "updated_at": now(),
                "lease_expires_at": now() + timedelta(seconds=lease_seconds),
                "log": bounded_log(
                    job.get("log"),
                    f"attempt {job['attempts'] + 1} on {worker}" + (" (took over)" if taken_over else ""),
                ),
            }
            transaction.update(ref, changes)
            job.update(changes, log=None)
            return Claim.RUN, job

        return attempt(self.client.transaction())

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float, step: int, total: int) -> bool:
        """Extend the lease and record progress; True when a cancel was requested."""
        ref = self.jobs.document(job_id)
        ref.update(
            {
                "lease_expires_at": now() + timedelta(seconds=lease_seconds),
                "progress": {"step": step, "total": total},
                "updated_at": now(),
            }
        )
        snapshot = ref.get(["cancel_requested"])
        return bool(snapshot.get("cancel_requested"))

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
        """running -> terminal, once; False when the job was already terminal or another worker
        holds it. The job's usage (GPU seconds, bytes out) is recorded in the same write."""
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> bool:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return False
            job = snapshot.to_dict()
            if is_terminal(job["status"]) or job.get("worker") != worker:
                return False
            message = f"{status.value}" + (f": {error['code']}: {error['message']}" if error else "")
            changes = self._terminal(job, status, message)
            changes.update(
                result=result, error=error, lease_expires_at=None, gpu_seconds=gpu_seconds, bytes_out=bytes_out
            )
            transaction.update(ref, changes)
            return True

        return bool(attempt(self.client.transaction()))

    def fail_queued(self, job_id: str, error: dict[str, str]) -> None:
        """A job that never ran (e.g. it could not be queued): failed, unless already terminal."""
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> None:
            snapshot = ref.get(transaction=transaction)
            job = snapshot.to_dict() if snapshot.exists else None
            if job is not None and not is_terminal(job["status"]):
                changes = self._terminal(job, JobStatus.FAILED, f"failed: {error['code']}: {error['message']}")
                changes["error"] = error
                transaction.update(ref, changes)

        attempt(self.client.transaction())

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Queued: canceled now. Running: the worker stops it at its next step."""
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> dict[str, Any] | None:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return None
            job = snapshot.to_dict()
            if job["status"] == JobStatus.QUEUED:
                changes = self._terminal(job, JobStatus.CANCELED, "canceled while queued")
                changes["cancel_requested"] = True
            elif job["status"] == JobStatus.RUNNING:
                changes = {
                    "cancel_requested": True,
                    "updated_at": now(),
                    "log": bounded_log(job.get("log"), "cancel requested"),
                }
            else:
                return job
            transaction.update(ref, changes)
            job.update(changes)
            return job

        return attempt(self.client.transaction())

    def release(self, job_id: str) -> None:
        """Give a running job's lease up at once, so its redelivery need not wait for it to expire."""
        self.jobs.document(job_id).update({"lease_expires_at": now() - timedelta(seconds=1)})

    def append_log(self, job_id: str, message: str) -> None:
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> None:
            snapshot = ref.get(transaction=transaction)
            if snapshot.exists:
                lines = snapshot.to_dict().get("log")
                transaction.update(ref, {"log": bounded_log(lines, message), "updated_at": now()})

        attempt(self.client.transaction())

    @staticmethod
    def _terminal(job: dict[str, Any], status: JobStatus, message: str) -> dict[str, Any]:
        return {
            "status": status.value,
            "finished_at": now(),
            "updated_at": now(),
            "log": bounded_log(job.get("log"), message),
        }
