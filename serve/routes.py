"""HTTP routes: thin, each one calls the service, the runner or the store."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

from serve.auth import ApiKey
from serve.errors import ApiError, request_id_of
from serve.schemas import (
    ErrorResponse,
    HealthResponse,
    Lifecycle,
    LipSyncPredictRequest,
    PredictRequest,
    PredictResponse,
)

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        401: "Missing or invalid API key",
        409: "gcs_destination already holds another object (never overwritten)",
        413: "Request body too large",
        422: "A field breaks a rule; `fields` names it",
        499: "The client disconnected while queued",
        500: "The generation or storing it failed",
        503: "Busy (queue full), not ready, GPU out of memory, or upload failed (kept, retried); see Retry-After",
        504: "The generation ran past its deadline",
    }.items()
}


@router.get("/", summary="Service description")
async def root(request: Request) -> dict[str, Any]:
    """What this server is, which model it serves, and where the API is described."""
    runner = request.app.state.runner
    return {
        "service": "videogen-serve",
        "model": runner.backend.describe(),
        "status": runner.state.value,
        "endpoints": {"predict": "POST /predict", "health": "GET /health", "videos": "GET /videos/{name}"},
        "docs": "/docs",
        "openapi": "/openapi.json",
    }


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Starting, or setup failed (see reason)"}},
)
async def health(request: Request) -> JSONResponse:
    """200 only when the model is loaded and a warm-up generation succeeded; 503 with a reason otherwise."""
    runner = request.app.state.runner
    state, reason = runner.state, runner.reason
    if state.is_serving() and not request.app.state.keys.available:
        # Fail closed: with no key every call would be a 401, so take this VM out of serving.
        refresher = request.app.state.key_refresher
        state, reason = Lifecycle.NO_API_KEYS, refresher.last_error if refresher else "no API keys"
    if runner.draining:
        state, reason = Lifecycle.DRAINING, "shutting down: finishing in-flight work, taking no new work"
    body = HealthResponse(
        status=state, reason=reason, model=runner.backend.name, queue_depth=runner.depth, in_flight=runner.in_flight
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if state.is_serving() else 503)


async def _predict(body: PredictRequest | LipSyncPredictRequest, request: Request) -> PredictResponse:
    """Through the job queue when PREDICT_VIA_QUEUE is on, else on this server's GPU."""
    if request.app.state.settings.predict_via_queue:
        from serve.job_routes import predict_through_queue

        return await predict_through_queue(body, request)
    service = request.app.state.service
    result: PredictResponse = await service.predict(
        body,
        request_id=request_id_of(request),
        base_url=str(request.base_url),
        is_disconnected=request.is_disconnected,
        state=request.scope["state"],
    )
    return result


async def predict(body: PredictRequest, request: Request, key_id: ApiKey) -> PredictResponse:
    """Generate a video from a prompt and wait for it (minutes on a GPU for the default size)."""
    return await _predict(body, request)


async def predict_lipsync(body: LipSyncPredictRequest, request: Request, key_id: ApiKey) -> PredictResponse:
    """Lip-sync a face video to a speech track and wait for it: `video_in` and `audio_in` are
    fetched (gs:// or https://), the video follows the speech's length, the speech is muxed in."""
    return await _predict(body, request)


_LIPSYNC_ERRORS = {
    **_ERRORS,
    413: {"model": ErrorResponse, "description": "Body, input file or input duration too large"},
    422: {
        "model": ErrorResponse,
        "description": "A field breaks a rule, or an input is unusable: unsafe_url, input_unreachable, "
        "invalid_video, invalid_audio, no_face_detected, input_too_large",
    },
}


def add_predict_route(app: FastAPI, *, lipsync: bool) -> None:
    """POST /predict takes the body of the served model's task."""
    if lipsync:
        app.add_api_route(
            "/predict", predict_lipsync, methods=["POST"], response_model=PredictResponse, responses=_LIPSYNC_ERRORS
        )
    else:
        app.add_api_route("/predict", predict, methods=["POST"], response_model=PredictResponse, responses=_ERRORS)


@router.get(
    "/videos/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}, 401: _ERRORS[401], 404: {"model": ErrorResponse}},
)
async def video(name: str, request: Request, key_id: ApiKey) -> FileResponse:
    """Download a stored video by the name in `video_url`."""
    path = request.app.state.store.find(name)
    if path is None:
        raise ApiError(404, "not_found", f"no video named {name!r}")
    return FileResponse(path, media_type="video/mp4", filename=name)


@router.post("/admin/drain", include_in_schema=False)
async def drain(request: Request) -> dict[str, Any]:
    """Stop taking work before a shutdown (the VM's shutdown script calls it); loopback only."""
    client = request.client.host if request.client else ""
    if client not in ("127.0.0.1", "::1"):
        raise ApiError(404, "not_found", "Not Found")
    return {"draining": True, "in_flight": request.app.state.runner.drain()}
