"""Where a synchronous /predict runs, chosen once at wiring: on this server's GPU (local), or
through the job queue (PREDICT_VIA_QUEUE: any server takes the call, any GPU VM runs it). Both
answer the same: a queued failure is raised again from its stored code, so its status is the
catalogue's, exactly as a direct one's."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from serve.core.prediction import Disconnected, Prediction, PredictionService
from serve.errors import ServeError, from_stored
from serve.jobs.model import JobStatus, is_terminal
from serve.jobs.submit import JobSubmitter
from serve.schemas import PredictResponse


class Dispatch(Protocol):
    async def predict(
        self, body: Any, *, request_id: str, tenant: str, is_disconnected: Disconnected | None = None
    ) -> Prediction: ...


class LocalDispatch:
    """On this server's GPU."""

    def __init__(self, service: PredictionService) -> None:
        self.service = service

    async def predict(
        self, body: Any, *, request_id: str, tenant: str, is_disconnected: Disconnected | None = None
    ) -> Prediction:
        return await self.service.predict(body, tenant=tenant, request_id=request_id, is_disconnected=is_disconnected)


class JobReader(Protocol):
    def get(self, job_id: str) -> dict[str, Any] | None: ...


class QueuedDispatch:
    """Through the job queue: submit, then wait for the job's end."""

    def __init__(self, *, submitter: JobSubmitter, store: JobReader, poll_seconds: float, deadline_seconds: float):
        self.submitter, self.store = submitter, store
        self.poll_seconds, self.deadline_seconds = poll_seconds, deadline_seconds

    async def predict(
        self, body: Any, *, request_id: str, tenant: str, is_disconnected: Disconnected | None = None
    ) -> Prediction:
        job, _ = await self.submitter.submit(body, tenant=tenant)
        return await self.wait(job["job_id"])

    async def wait(self, job_id: str) -> Prediction:
        deadline = time.monotonic() + self.deadline_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_seconds)
            job = await asyncio.to_thread(self.store.get, job_id)
            if job is None or not is_terminal(job["status"]):
                continue
            if job["status"] == JobStatus.SUCCEEDED:
                return Prediction(
                    response=PredictResponse.model_validate(job["result"]),
                    gpu_seconds=float(job.get("gpu_seconds") or 0.0),
                    bytes_out=int(job.get("bytes_out") or 0),
                )
            fallback = "canceled" if job["status"] == JobStatus.CANCELED else "internal_error"
            error = from_stored(job.get("error") or {"code": fallback, "message": f"the job was {job['status']}"})
            raise ServeError(error.code, f"{error.message} (job {job_id})")
        raise ServeError("generation_timeout", f"no result in time; the job goes on: GET /jobs/{job_id}")
