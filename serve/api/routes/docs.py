"""/docs offline: Swagger UI's page with its script, style and icon served by this server from the
swagger-ui-py wheel (Swagger UI 5, which renders OpenAPI 3.1), never from a CDN. Only the three
files the page uses are served. ReDoc is not offered: it has no packaged copy here."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from serve.errors import ServeError

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def _static() -> Path:
    return Path(str(files("swagger_ui") / "static"))


router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="videogen-serve: API",
        swagger_js_url="/docs/static/swagger-ui-bundle.js",
        swagger_css_url="/docs/static/swagger-ui.css",
        swagger_favicon_url="/docs/static/favicon-32x32.png",
    )


@router.get("/docs/static/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise ServeError("not_found", f"no such documentation file: {name}")
    return FileResponse(_static() / name, media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
