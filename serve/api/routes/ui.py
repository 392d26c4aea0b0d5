"""/ui: a page to submit a job, watch its progress and play the video. Three static files served
from serve/api/ui (no CDN, no build step) under a strict Content-Security-Policy: scripts, styles
and requests to this server only, videos from it (as blobs) or from Cloud Storage signed URLs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from serve.errors import ServeError

UI = Path(__file__).resolve().parents[1] / "ui"
FILES = {"app.js": "text/javascript", "app.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: https://storage.googleapis.com; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/ui")
async def page() -> FileResponse:
    return FileResponse(UI / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> FileResponse:
    if name not in FILES:
        raise ServeError("not_found", f"no such page file: {name}")
    return FileResponse(UI / name, media_type=FILES[name], headers=HEADERS)
