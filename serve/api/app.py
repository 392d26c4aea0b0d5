"""The FastAPI app over a built container: routes, error handlers, middleware, OpenAPI. The
container's components start in the lifespan (the model loads on the runner's thread)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from serve.api.deps import correlation_id
from serve.api.errors import install_error_handlers
from serve.api.middleware import RequestContextMiddleware
from serve.api.openapi import publish_limits
from serve.api.routes import docs, jobs, ops, predict, ui, uploads, videos
from serve.wiring import Container


def create_app(container: Container) -> FastAPI:
    """The app serving `container`'s task; the job routes only when jobs are enabled."""
    settings = container.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        try:
            yield
        finally:
            await container.stop()

    app = FastAPI(
        title="videogen-serve",
        version="0.1.0",
        summary=f"{container.spec.name} behind X-API-Key POST /predict, and an asynchronous job API",
        lifespan=lifespan,
        docs_url=None,  # serve.api.routes.docs: the same page with its files served here (offline)
        redoc_url=None,
    )
    app.state.container = container  # read only by serve.api.deps
    install_error_handlers(app)
    traced = [Depends(correlation_id)]
    app.include_router(ops.router)
    app.include_router(docs.router)
    app.include_router(ui.router)
    app.include_router(predict.predict_router(container.spec), dependencies=traced)
    app.include_router(videos.router, dependencies=traced)
    if container.uploads is not None:
        app.include_router(uploads.router, dependencies=traced)
    if container.jobs is not None:
        app.include_router(jobs.submit_router(container.spec), dependencies=traced)
        app.include_router(jobs.router, dependencies=traced)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=container.metrics,
        max_body_bytes=settings.max_body_bytes,
        project=settings.gcp_project,
        streamed={"/uploads": settings.upload_max_bytes + 16 * 1024},  # the file plus its multipart framing
    )

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            publish_limits(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
