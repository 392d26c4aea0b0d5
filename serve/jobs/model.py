"""What a job is: its status, its bounded log, what running it gave, and how the API shows it."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from serve.errors import ServeError
from serve.schemas import JobResponse

# The stored log keeps its first line (queued) and the latest ones: a job retried many times, or
# canceled and heartbeating, cannot grow its document without bound (Firestore caps one at 1 MiB).
MAX_LOG_LINES = 200


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


def is_terminal(status: str) -> bool:
    return JobStatus(status).is_terminal()


class Claim(StrEnum):
    RUN = "run"  # this worker runs it now
    DONE = "done"  # terminal already (or canceled while queued): ack, do nothing
    BUSY = "busy"  # another worker holds a fresh lease: back when it ends (never acked: that worker may be dead)
    MISSING = "missing"  # no such job (e.g. expired): ack


def now() -> datetime:
    return datetime.now(UTC)


def log_line(message: str) -> dict[str, Any]:
    return {"time": now().isoformat(timespec="milliseconds"), "message": message}


def bounded_log(lines: list[dict[str, Any]] | None, *messages: str) -> list[dict[str, Any]]:
    """`lines` with `messages` appended, at most MAX_LOG_LINES: the first line and the newest."""
    result = [*(lines or []), *(log_line(m) for m in messages)]
    if len(result) > MAX_LOG_LINES:
        dropped = log_line(f"({len(result) - MAX_LOG_LINES + 1} lines dropped)")
        result = [result[0], dropped, *result[-(MAX_LOG_LINES - 2) :]]
    return result


def request_digest(request: dict[str, Any], webhook_url: str | None) -> str:
    """What makes two submissions the same request."""
    canonical = json.dumps({"request": request, "webhook_url": webhook_url}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def job_id_for(tenant: str, idempotency_key: str | None) -> str:
    """A new random id; or, with an idempotency key, the one id that tenant and key always get."""
    if idempotency_key:
        return hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()[:32]
    return uuid.uuid4().hex


# The transitions below are the job's rules, shared by both stores (Firestore, SQLite): each takes
# the job as read inside the store's transaction and returns the changes to write in it.


def new_job(
    job_id: str,
    tenant: str,
    request: dict[str, Any],
    idempotency_key: str | None,
    webhook_url: str | None,
    ttl: timedelta,
) -> dict[str, Any]:
    created = now()
    return {
        "job_id": job_id,
        "tenant": tenant,
        "status": JobStatus.QUEUED.value,
        "request": request,
        "idempotency_key": idempotency_key,
        "request_digest": request_digest(request, webhook_url),
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
        "expire_at": created + ttl,  # Firestore: a TTL policy on this field; SQLite: swept on create
    }


def same_request(existing: dict[str, Any], new: dict[str, Any]) -> bool:
    return bool(existing.get("request_digest", new["request_digest"]) == new["request_digest"])


def idempotency_conflict(job_id: str, idempotency_key: str | None) -> ServeError:
    """The same key with another body (or webhook): returning the old job would silently drop the
    new request."""
    return ServeError(
        "idempotency_conflict",
        f"idempotency_key {idempotency_key!r} was used for job {job_id} with another body; "
        "use a new key for a new request",
    )


def terminal_changes(job: dict[str, Any], status: JobStatus, message: str) -> dict[str, Any]:
    return {
        "status": status.value,
        "finished_at": now(),
        "updated_at": now(),
        "log": bounded_log(job.get("log"), message),
    }


def claim_changes(job: dict[str, Any], worker: str, lease_seconds: float) -> tuple[Claim, dict[str, Any] | None]:
    """What claiming `job` for `worker` gives, and the changes to write (None: write nothing)."""
    if is_terminal(job["status"]):
        return Claim.DONE, None
    lease = job.get("lease_expires_at")
    if job["status"] == JobStatus.RUNNING and lease is not None and lease > now():
        return Claim.BUSY, None
    if job["cancel_requested"]:
        return Claim.DONE, terminal_changes(job, JobStatus.CANCELED, "canceled before it ran")
    taken_over = job["status"] == JobStatus.RUNNING
    return Claim.RUN, {
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


def heartbeat_changes(lease_seconds: float, step: int, total: int) -> dict[str, Any]:
    return {
        "lease_expires_at": now() + timedelta(seconds=lease_seconds),
        "progress": {"step": step, "total": total},
        "updated_at": now(),
    }


def finish_changes(
    job: dict[str, Any],
    worker: str,
    status: JobStatus,
    *,
    result: dict[str, Any] | None,
    error: dict[str, str] | None,
    gpu_seconds: float,
    bytes_out: int,
    progress: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """running -> terminal, once: None when the job is terminal already or another worker holds it.
    `progress`: the last (step, total) the model reported; the stored total was the request's step
    count, which a model may not run (a distilled checkpoint's fixed schedule)."""
    if is_terminal(job["status"]) or job.get("worker") != worker:
        return None
    message = f"{status.value}" + (f": {error['code']}: {error['message']}" if error else "")
    changes = terminal_changes(job, status, message)
    changes.update(result=result, error=error, lease_expires_at=None, gpu_seconds=gpu_seconds, bytes_out=bytes_out)
    if progress is not None and progress[1] > 0:
        changes["progress"] = {"step": progress[0], "total": progress[1]}
    return changes


def fail_queued_changes(job: dict[str, Any] | None, error: dict[str, str]) -> dict[str, Any] | None:
    if job is None or is_terminal(job["status"]):
        return None
    changes = terminal_changes(job, JobStatus.FAILED, f"failed: {error['code']}: {error['message']}")
    changes["error"] = error
    return changes


def cancel_changes(job: dict[str, Any]) -> dict[str, Any] | None:
    """Queued: canceled now. Running: the worker stops it at its next step. Terminal: nothing."""
    if job["status"] == JobStatus.QUEUED:
        changes = terminal_changes(job, JobStatus.CANCELED, "canceled while queued")
        changes["cancel_requested"] = True
        return changes
    if job["status"] == JobStatus.RUNNING:
        return {"cancel_requested": True, "updated_at": now(), "log": bounded_log(job.get("log"), "cancel requested")}
    return None


def release_changes() -> dict[str, Any]:
    return {"lease_expires_at": now() - timedelta(seconds=1)}


@dataclass
class Outcome:
    """What running a job gave: a stored result, or an error that is final or worth a retry."""

    status: JobStatus
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    retry: bool = False
    gpu_seconds: float = 0.0
    bytes_out: int = 0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def describe(job: dict[str, Any], position: int | None = None) -> JobResponse:
    """The API's view of a stored job."""
    job_id = job["job_id"]
    progress = job.get("progress") or {"step": 0, "total": 0}
    total = max(int(progress.get("total") or 0), 0)
    step = int(progress.get("step") or 0)
    if job["status"] == JobStatus.SUCCEEDED:
        step = total
    return JobResponse(
        job_id=job_id,
        status=job["status"],
        created_at=_iso(job["created_at"]) or "",
        updated_at=_iso(job["updated_at"]) or "",
        started_at=_iso(job.get("started_at")),
        finished_at=_iso(job.get("finished_at")),
        attempts=job.get("attempts", 0),
        progress={"step": step, "total": total, "fraction": round(step / total, 4) if total else 0.0},
        queue_position=position,
        result=job.get("result"),
        error=job.get("error"),
        links={
            "self": f"/jobs/{job_id}",
            "log": f"/jobs/{job_id}/log",
            "events": f"/jobs/{job_id}/events",
            "cancel": f"/jobs/{job_id}/cancel",
            "result": f"/result/{job_id}",
        },
    )
