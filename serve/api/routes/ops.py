"""Operations: what this server is, /health for the load balancer and the autohealer, and the
drain the VM's shutdown script calls."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve.api.deps import ContainerDep, RunnerDep
from serve.core.health import health as compose_health
from serve.errors import ServeError
from serve.schemas import HealthResponse

router = APIRouter()


@router.get("/", summary="Service description")
async def root(container: ContainerDep) -> dict[str, Any]:
    """What this server is, which model and task it serves, what it offers, and where the API is
    described; the page (/ui) reads it."""
    runner = container.runner
    endpoints = {"predict": "POST /predict", "health": "GET /health", "videos": "GET /videos/{name}"}
    if container.jobs is not None:
        endpoints |= {"jobs": "POST /jobs", "job": "GET /jobs/{id}", "events": "GET /jobs/{id}/events"}
    if container.uploads is not None:
        endpoints["uploads"] = "POST /uploads"
    return {
        "service": "videogen-serve",
        "model": runner.describe(),
        "task": container.spec.name,
        "status": runner.state.value,
        "jobs": container.jobs is not None,
        "uploads": container.uploads is not None,
        "endpoints": endpoints,
        "ui": "/ui",
        "docs": "/docs",
        "openapi": "/openapi.json",
    }


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Starting, or setup failed (see reason)"}},
)
async def health(container: ContainerDep) -> JSONResponse:
    """200 only when the model is loaded and a warm-up generation succeeded; 503 with a reason otherwise."""
    body = compose_health(
        container.runner,
        container.keys,
        container.key_refresher,
        container.store,
        container.settings.min_free_disk_bytes,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.status.is_serving() else 503)


@router.post("/admin/drain", include_in_schema=False)
async def drain(request: Request, runner: RunnerDep) -> dict[str, Any]:
    """Stop taking work before a shutdown (the VM's shutdown script calls it); loopback only."""
    client = request.client.host if request.client else ""
    if client not in ("127.0.0.1", "::1"):
        raise ServeError("not_found", "Not Found")
    return {"draining": True, "in_flight": runner.drain()}
