"""The job API: POST /jobs, GET /jobs/{id}, GET /jobs/{id}/log, POST /jobs/{id}/cancel, and
the aliases POST /process, GET /status/{id}, GET /result/{id}. A job is visible only to keys
of its tenant; any other id is a 404."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from serve.auth import ApiKey
from serve.errors import ApiError, invalid_field
from serve.fetch import FetchError, FetchPolicy
from serve.fetch import check_url as check_input_url
from serve.jobs import JobStore, describe
from serve.limits import check_limits
from serve.schemas import (
    ErrorResponse,
    JobLogResponse,
    JobRequest,
    JobResponse,
    LipSyncJobRequest,
    LipSyncPredictRequest,
    PredictRequest,
    PredictResponse,
)
from serve.webhooks import UnsafeUrl, check_url

log = logging.getLogger("serve.jobs")
router = APIRouter(tags=["jobs"])
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}, 401: {"model": ErrorResponse}}


def _check_webhook(url: str, settings: Any) -> None:
    if not settings.webhook_secret:
        raise invalid_field("webhook_url", "webhooks are not configured on this server (WEBHOOK_SECRET)")
    try:
        check_url(url, allow_private=settings.webhook_allow_private)
    except UnsafeUrl as exc:
        raise invalid_field("webhook_url", str(exc)) from None


async def _enqueue(
    request: Request, payload: dict[str, Any], idempotency_key: str | None, webhook_url: str | None
) -> tuple[dict[str, Any], bool]:
    """Record the job, then publish it (only when new); a failed publish fails the job, 503."""
    store: JobStore = request.app.state.jobs
    job, created = await asyncio.to_thread(store.create, request.state.tenant, payload, idempotency_key, webhook_url)
    if created:
        try:
            await asyncio.to_thread(request.app.state.job_queue.publish, job["job_id"])
        except Exception as exc:
            error = {"code": "queue_unavailable", "message": "the job could not be queued; submit it again"}
            await asyncio.to_thread(store.fail_queued, job["job_id"], error)
            log.error("publish failed", extra={"job_id": job["job_id"], "error": str(exc)})
            raise ApiError(503, "queue_unavailable", error["message"], headers={"Retry-After": "10"}) from None
        request.app.state.metrics.jobs.labels("submitted").inc()
    return job, created


async def _own_job(request: Request, job_id: str) -> dict[str, Any]:
    store: JobStore = request.app.state.jobs
    job = await asyncio.to_thread(store.get, job_id) if len(job_id) <= 64 else None
    if job is None or job["tenant"] != request.state.tenant:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


def _check_body(body: PredictRequest | LipSyncPredictRequest, settings: Any, gcs: Any) -> None:
    """What can be refused before queueing: bounds, destination bucket, input URL schemes."""
    if isinstance(body, LipSyncPredictRequest):
        destination = body.destination()
        policy = FetchPolicy(allow_loopback=settings.fetch_allow_loopback)
        for field in ("video_in", "audio_in"):
            url = getattr(body, field)
            if not url.startswith("gs://"):
                try:
                    check_input_url(url, field, policy)
                except FetchError as exc:
                    raise ApiError(exc.status, exc.code, str(exc)) from None
    else:
        check_limits(body, settings)
        destination = body.gcs_destination
    if destination is not None:
        if gcs is None:
            raise ApiError(422, "invalid_request", "gcs_destination: no Cloud Storage output is configured")
        gcs.destination("check", destination)  # the bucket must be allowed; 422 otherwise


async def submit(body: JobRequest | LipSyncJobRequest, request: Request, key_id: ApiKey) -> JSONResponse:
    """Queue a generation and return at once; poll the job, or its `links`."""
    settings = request.app.state.settings
    _check_body(body, settings, request.app.state.service.gcs)
    if body.webhook_url is not None:
        await asyncio.to_thread(_check_webhook, body.webhook_url, settings)
    payload = body.model_dump(exclude={"idempotency_key", "webhook_url"})
    job, created = await _enqueue(request, payload, body.idempotency_key, body.webhook_url)
    log.info("job submitted", extra={"job_id": job["job_id"], "tenant": job["tenant"], "created": created})
    described = describe(job)
    return JSONResponse(
        described.model_dump(mode="json"),
        status_code=202 if created else 200,
        headers={"Location": described.links["self"]},
    )


_STATUS_OF = {
    "invalid_request": 422,
    "destination_exists": 409,
    "canceled": 499,
    "busy": 503,
    "gpu_out_of_memory": 503,
    "shutting_down": 503,
    "upload_failed": 503,
    "generation_timeout": 504,
    "input_too_long": 413,
    "unsafe_url": 422,
    "input_unreachable": 422,
    "input_too_large": 422,
    "invalid_video": 422,
    "invalid_audio": 422,
    "no_face_detected": 422,
}


async def predict_through_queue(body: PredictRequest | LipSyncPredictRequest, request: Request) -> PredictResponse:
    """/predict when PREDICT_VIA_QUEUE is on: the same answer, but the work goes through the job
    queue, so any server can take the call and any GPU VM can run it."""
    settings = request.app.state.settings
    _check_body(body, settings, request.app.state.service.gcs)
    store: JobStore = request.app.state.jobs
    job, _ = await _enqueue(request, body.model_dump(), None, None)
    job_id = job["job_id"]
    deadline = time.monotonic() + settings.queue_timeout_seconds + settings.generation_timeout_seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(settings.job_heartbeat_seconds)
        current = await asyncio.to_thread(store.get, job_id)
        if current is None or current["status"] not in ("succeeded", "failed", "canceled"):
            continue
        if current["status"] == "succeeded":
            return PredictResponse.model_validate(current["result"])
        error = current.get("error") or {"code": current["status"], "message": f"the job was {current['status']}"}
        raise ApiError(_STATUS_OF.get(error["code"], 500), error["code"], f"{error['message']} (job {job_id})")
    raise ApiError(504, "generation_timeout", f"no result in time; the job goes on: GET /jobs/{job_id}")


async def submit_lipsync(body: LipSyncJobRequest, request: Request, key_id: ApiKey) -> JSONResponse:
    """Queue a lip-sync and return at once; poll the job, or its `links`."""
    return await submit(body, request, key_id)


async def submit_generation(body: JobRequest, request: Request, key_id: ApiKey) -> JSONResponse:
    """Queue a generation and return at once; poll the job, or its `links`."""
    return await submit(body, request, key_id)


def add_job_routes(app: FastAPI, *, lipsync: bool) -> None:
    """POST /jobs and its alias /process take the body of the served model's task."""
    endpoint = submit_lipsync if lipsync else submit_generation
    for path in ("/jobs", "/process"):
        app.add_api_route(
            path, endpoint, methods=["POST"], status_code=202, response_model=JobResponse, responses=_404, tags=["jobs"]
        )


@router.get("/jobs/{job_id}", response_model=JobResponse, responses=_404)
async def status(job_id: str, request: Request, key_id: ApiKey) -> JobResponse:
    """The job's status, progress, timings, and result or error."""
    job = await _own_job(request, job_id)
    position = None
    if job["status"] == "queued":
        position = await asyncio.to_thread(request.app.state.jobs.position, job)
    return describe(job, position)


@router.get("/status/{job_id}", response_model=JobResponse, responses=_404)
async def status_alias(job_id: str, request: Request, key_id: ApiKey) -> JobResponse:
    """Alias of GET /jobs/{id}."""
    return await status(job_id, request, key_id)


@router.get("/jobs/{job_id}/log", response_model=JobLogResponse, responses=_404)
async def job_log(job_id: str, request: Request, key_id: ApiKey) -> JobLogResponse:
    """The job's log lines (queued, attempts, cancel requests, outcome)."""
    job = await _own_job(request, job_id)
    return JobLogResponse(job_id=job_id, lines=job.get("log") or [])


@router.post("/jobs/{job_id}/cancel", response_model=JobResponse, responses=_404)
async def cancel(job_id: str, request: Request, key_id: ApiKey) -> JobResponse:
    """A queued job never runs; a running one stops at its next step and frees the GPU."""
    await _own_job(request, job_id)
    job = await asyncio.to_thread(request.app.state.jobs.cancel, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return describe(job)


@router.get("/result/{job_id}", responses={**_404, 303: {"description": "To the video"}, 409: {"model": ErrorResponse}})
async def result(job_id: str, request: Request, key_id: ApiKey) -> Any:
    """Succeeded: a redirect (303) to the video's URL. Failed or canceled: the error. Else 409."""
    job = await _own_job(request, job_id)
    if job["status"] == "succeeded":
        return RedirectResponse(job["result"]["video_url"], status_code=303)
    if job["status"] in ("failed", "canceled"):
        error = job.get("error") or {"code": job["status"], "message": f"the job was {job['status']}"}
        raise ApiError(409, error["code"], f"the job {job['status']}: {error['message']}")
    raise ApiError(409, "not_finished", f"the job is {job['status']}; poll /jobs/{job_id}")
