"""Downloading a video stored on this server's disk (local mode)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from serve.api.deps import Caller, StoreDep
from serve.api.openapi import responses
from serve.errors import ServeError

router = APIRouter(tags=["videos"])


@router.get(
    "/videos/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}, **responses("unauthorized", "not_found")},
)
async def video(name: str, caller: Caller, store: StoreDep) -> FileResponse:
    """Download a stored video by the name in `video_url` (only with a key of the tenant that made it)."""
    path = store.find(name, caller.tenant)
    if path is None:
        raise ServeError("not_found", f"no video named {name!r}")
    return FileResponse(path, media_type="video/mp4", filename=name)
