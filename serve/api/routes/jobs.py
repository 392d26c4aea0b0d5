"""The job API: POST /jobs, GET /jobs/{id}, GET /jobs/{id}/log, GET /jobs/{id}/events (Server-Sent
Events, FastAPI's own encoder), POST /jobs/{id}/cancel, and the aliases POST /process,
GET /status/{id}, GET /result/{id}. A job is visible only to keys of its tenant; any other id is a
404."""

# No `from __future__ import annotations`: the submit body's type is the task spec's (see predict.py).

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from serve.api.deps import Caller, JobsDep, SettingsDep, absolute
from serve.api.openapi import JOB_ERRORS, as_json, responses
from serve.config import Settings
from serve.core.tasks import TaskSpec
from serve.errors import ServeError, from_stored
from serve.jobs.events import Cursor, events_since
from serve.jobs.model import JobStatus, describe
from serve.schemas import JobLogResponse, JobResponse
from serve.wiring import Jobs

_404 = responses(*JOB_ERRORS)
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def _view(job: dict[str, Any], request: Request, settings: Settings, position: int | None = None) -> JobResponse:
    """The job as a client sees it: a video stored on this server's disk gets an absolute URL."""
    described = describe(job, position)
    if described.result is not None:
        url = absolute(described.result.video_url, request, settings)
        described.result = described.result.model_copy(update={"video_url": url})
    return described


async def _own_job(jobs: Jobs, job_id: str, caller: Any) -> dict[str, Any]:
    # Job ids are the server's own (32 hex digits); anything else is unknown without asking the
    # store, which refuses ids such as `.`, `..` or `__x__` with an error of its own.
    job = await asyncio.to_thread(jobs.store.get, job_id) if _JOB_ID.fullmatch(job_id) else None
    if job is None or job["tenant"] != caller.tenant:
        raise ServeError("not_found", f"no job {job_id!r}")
    return job


def submit_router(spec: TaskSpec) -> APIRouter:
    """POST /jobs and its alias /process, taking `spec`'s job body."""
    router = APIRouter(tags=["jobs"])
    body_type = spec.job_body

    async def submit(
        body: Annotated[body_type, Body()],  # type: ignore[valid-type]
        request: Request,
        caller: Caller,
        jobs: JobsDep,
        settings: SettingsDep,
    ) -> JSONResponse:
        """Queue a generation and return at once (202); poll the job, or follow its `links`. The
        same idempotency key (and tenant) returns the same job (200)."""
        job, created = await jobs.submitter.submit(
            body,
            tenant=caller.tenant,
            idempotency_key=body.idempotency_key,  # type: ignore[attr-defined]
            webhook_url=body.webhook_url,  # type: ignore[attr-defined]
        )
        described = _view(job, request, settings)
        return JSONResponse(
            described.model_dump(mode="json"),
            status_code=202 if created else 200,
            headers={"Location": described.links["self"]},
        )

    codes = ("unauthorized", "body_too_large", "invalid_request", "idempotency_conflict", "queue_unavailable")
    codes_with_inputs = (*codes, *spec.input_errors)
    for path in ("/jobs", "/process"):
        router.add_api_route(
            path,
            submit,
            methods=["POST"],
            status_code=202,
            response_model=JobResponse,
            responses=responses(*codes_with_inputs),
        )
    return router


router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobResponse, responses=_404)
async def status(job_id: str, request: Request, caller: Caller, jobs: JobsDep, settings: SettingsDep) -> JobResponse:
    """The job's status, progress, timings, and result or error."""
    job = await _own_job(jobs, job_id, caller)
    position = None
    if job["status"] == JobStatus.QUEUED:
        position = await asyncio.to_thread(jobs.store.position, job)
    return _view(job, request, settings, position)


@router.get("/status/{job_id}", response_model=JobResponse, responses=_404)
async def status_alias(
    job_id: str, request: Request, caller: Caller, jobs: JobsDep, settings: SettingsDep
) -> JobResponse:
    """Alias of GET /jobs/{id}."""
    return await status(job_id, request, caller, jobs, settings)


@router.get("/jobs/{job_id}/log", response_model=JobLogResponse, responses=_404)
async def job_log(job_id: str, caller: Caller, jobs: JobsDep) -> JobLogResponse:
    """The job's log lines (queued, attempts, cancel requests, outcome)."""
    job = await _own_job(jobs, job_id, caller)
    return JobLogResponse(job_id=job_id, lines=job.get("log") or [])


@router.post("/jobs/{job_id}/cancel", response_model=JobResponse, responses=_404)
async def cancel(job_id: str, request: Request, caller: Caller, jobs: JobsDep, settings: SettingsDep) -> JobResponse:
    """A queued job never runs; a running one stops at its next step and frees the GPU."""
    await _own_job(jobs, job_id, caller)
    job = await asyncio.to_thread(jobs.store.cancel, job_id)
    if job is None:
        raise ServeError("not_found", f"no job {job_id!r}")
    return _view(job, request, settings)


@router.get(
    "/result/{job_id}",
    responses={**_404, 303: {"description": "To the video"}, **responses("not_finished")},
)
async def result(job_id: str, request: Request, caller: Caller, jobs: JobsDep, settings: SettingsDep) -> Any:
    """Succeeded: a redirect (303) to the video's URL. Failed or canceled: the job's error, with
    the status its code has everywhere. Else 409 `not_finished`."""
    job = await _own_job(jobs, job_id, caller)
    if job["status"] == JobStatus.SUCCEEDED:
        return RedirectResponse(absolute(job["result"]["video_url"], request, settings), status_code=303)
    if job["status"] in (JobStatus.FAILED, JobStatus.CANCELED):
        stored = job.get("error") or {"code": "canceled", "message": f"the job was {job['status']}"}
        error = from_stored(stored)
        raise ServeError(error.code, f"the job {job['status']}: {error.message}")
    raise ServeError("not_finished", f"the job is {job['status']}; poll /jobs/{job_id}")


async def _job_of_caller(job_id: str, caller: Caller, jobs: JobsDep) -> dict[str, Any]:
    """The job, looked up before a stream starts, so an unknown one is a plain 404."""
    return await _own_job(jobs, job_id, caller)


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        **as_json(_404),
        200: {"description": "`text/event-stream`: status, log, progress, then result or error"},
    },
)
async def job_events(
    job_id: str,
    request: Request,
    job: Annotated[dict[str, Any], Depends(_job_of_caller)],
    jobs: JobsDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this event (browsers send it when they reconnect)")
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """The job's life as Server-Sent Events: `status` changes, `log` lines, `progress` (step, total,
    fraction, eta_seconds), then `result` (the job, as GET /jobs/{id} shows it) or `error`
    ({code, message}); the stream ends with the job. Each event's id is a cursor: reconnect with
    `Last-Event-ID` to get only what you have not seen."""
    cursor = Cursor.parse(last_event_id)
    poll = min(max(settings.heartbeat_seconds / 2, 0.2), 2.0)
    first = True
    while True:
        position = None
        if job["status"] == JobStatus.QUEUED:
            position = await asyncio.to_thread(jobs.store.position, job)
        described = _view(job, request, settings, position).model_dump(mode="json")
        for event in events_since(cursor, job, described):
            yield ServerSentEvent(data=event.data, event=event.event, id=event.id, retry=2000 if first else None)
            first = False
        if cursor.final or await request.is_disconnected():
            return
        await asyncio.sleep(poll)
        fresh = await asyncio.to_thread(jobs.store.get, job_id)
        if fresh is None:  # expired while watched
            yield ServerSentEvent(data={"code": "not_found", "message": f"no job {job_id!r}"}, event="error")
            return
        job = fresh
