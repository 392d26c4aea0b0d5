"""Running one job: job -> prediction -> outcome. Whether a failed run is tried again is decided
by the error's kind in the one catalogue (serve.errors), never by an HTTP status:

- transient (busy, GPU out of memory, a GPU fault, a lost worker): the job runs again, up to
  JOB_MAX_ATTEMPTS, then fails with the reason;
- upload: the video exists and is kept; the upload is tried again here, with backoff, and the
  generation never runs again; if every try fails, the job fails with `upload_failed` and the
  upload goes on in the background (the video is kept, never lost);
- canceled: the job is canceled; anything else (a refused request, our own fault): final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from serve.core.prediction import Prediction, PredictionService, UploadPending
from serve.core.runner import Task
from serve.errors import Kind, ServeError
from serve.jobs.model import JobStatus, Outcome
from serve.obs.metrics import Metrics

log = logging.getLogger("serve.jobs.run")


def outcome_of(error: ServeError) -> Outcome:
    """The outcome of a run that ended with `error`, by its kind."""
    if error.kind is Kind.CANCELED:
        return Outcome(JobStatus.CANCELED, error=error.to_dict())
    return Outcome(JobStatus.FAILED, error=error.to_dict(), retry=error.kind is Kind.TRANSIENT)


class JobRun:
    """The worker's `run_job`: runs a stored job through the same prediction path as /predict."""

    def __init__(
        self, *, service: PredictionService, metrics: Metrics, upload_attempts: int, upload_delay: float
    ) -> None:
        self.service, self.metrics = service, metrics
        self.upload_attempts, self.upload_delay = upload_attempts, upload_delay

    async def __call__(self, job: dict[str, Any], on_task: Callable[[Task], None]) -> Outcome:
        body = self.service.spec.predict_body.model_validate(job["request"])
        try:
            try:
                prediction = await self.service.predict(
                    body,
                    tenant=job["tenant"],
                    request_id=job["job_id"],
                    on_task=on_task,
                    retry_upload_in_background=False,
                )
            except UploadPending as pending:
                prediction = await self._upload_again(pending)
        except ServeError as error:
            outcome = outcome_of(error)
            self.metrics.jobs.labels("retried" if outcome.retry else outcome.status.value).inc()
            return outcome
        self.metrics.jobs.labels("succeeded").inc()
        return Outcome(
            JobStatus.SUCCEEDED,
            result=prediction.response.model_dump(mode="json"),
            gpu_seconds=prediction.gpu_seconds,
            bytes_out=prediction.bytes_out,
        )

    async def _upload_again(self, pending: UploadPending) -> Prediction:
        """Upload the kept video again with backoff; then hand it to the background retry."""
        for attempt in range(1, self.upload_attempts + 1):
            await asyncio.sleep(self.upload_delay * 2 ** (attempt - 1))
            log.info("uploading the kept video again", extra={"job_id": pending.request_id, "attempt": attempt})
            try:
                return await self.service.finish_upload(pending)
            except UploadPending as again:
                pending = again
        self.service.retry_upload_later(pending)
        raise ServeError(
            "upload_failed",
            f"the video was generated but {self.upload_attempts + 1} uploads to {pending.destination.uri} failed; "
            "it is kept and the upload goes on in the background",
        )
