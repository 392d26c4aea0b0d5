"""Typed dependencies: the one place that reads `app.state` (the container), and the API key.

Routes declare what they need (`ServiceDep`, `RunnerDep`, `Caller`, ...) and never touch
`request.app.state` themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader

from serve.config import Settings
from serve.core.keys import KeyStore
from serve.core.prediction import PredictionService
from serve.core.runner import Runner
from serve.errors import ServeError
from serve.io.local_store import LocalStore
from serve.io.uploads import UploadStore
from serve.jobs.dispatch import Dispatch
from serve.wiring import Container, Jobs

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key of this server")


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def get_settings(container: ContainerDep) -> Settings:
    return container.settings


def get_runner(container: ContainerDep) -> Runner:
    return container.runner


def get_service(container: ContainerDep) -> PredictionService:
    return container.service


def get_dispatch(container: ContainerDep) -> Dispatch:
    return container.dispatch


def get_store(container: ContainerDep) -> LocalStore:
    return container.store


def get_keys(container: ContainerDep) -> KeyStore:
    return container.keys


def get_uploads(container: ContainerDep) -> UploadStore:
    if container.uploads is None:
        raise ServeError("not_found", "uploads are not enabled on this server (UPLOAD_BUCKET)")
    return container.uploads


def get_jobs(container: ContainerDep) -> Jobs:
    if container.jobs is None:  # the job routes exist only when jobs are enabled
        raise ServeError("not_found", "jobs are not enabled on this server")
    return container.jobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
ServiceDep = Annotated[PredictionService, Depends(get_service)]
DispatchDep = Annotated[Dispatch, Depends(get_dispatch)]
StoreDep = Annotated[LocalStore, Depends(get_store)]
KeysDep = Annotated[KeyStore, Depends(get_keys)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
UploadsDep = Annotated[UploadStore, Depends(get_uploads)]


@dataclass(frozen=True)
class Identity:
    """Who is calling: a key id that is safe to log, and the key's tenant."""

    key_id: str
    tenant: str


async def require_api_key(
    request: Request, keys: KeysDep, presented: Annotated[str | None, Depends(_header)]
) -> Identity:
    """The caller, or a 401 that does not say whether the key was missing or wrong."""
    found = keys.identify(presented)
    if found is None:
        raise ServeError("unauthorized", "missing or invalid API key (header X-API-Key)")
    request.state.key_id = found[0]  # for the access log line
    return Identity(key_id=found[0], tenant=found[1])


Caller = Annotated[Identity, Depends(require_api_key)]


async def correlation_id(
    x_request_id: Annotated[
        str | None,
        Header(
            description="Your correlation id (8-64 of A-Z a-z 0-9 . _ -), echoed and logged; another value is "
            "replaced by the server's. It never names a file or a job."
        ),
    ] = None,
) -> None:
    """Declares X-Request-ID in the API description (serve/api/middleware.py reads it)."""


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "unknown"))


def base_url(request: Request, settings: Settings) -> str:
    """Where this server is reached: PUBLIC_URL, else the request's own base URL."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


def absolute(url: str, request: Request, settings: Settings) -> str:
    """A stored video's URL for a client: relative ones (`/videos/...`) on this server's base."""
    return f"{base_url(request, settings)}{url}" if url.startswith("/") else url
