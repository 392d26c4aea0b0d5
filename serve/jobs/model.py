"""What a job is: its status, its bounded log, what running it gave, and how the API shows it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

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
    BUSY = "busy"  # another worker holds a fresh lease: ack, it finishes the job
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
            "cancel": f"/jobs/{job_id}/cancel",
            "result": f"/result/{job_id}",
        },
    )
