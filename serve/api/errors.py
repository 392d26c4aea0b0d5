"""Exception handlers: every error is JSON with a stable code, a message and the request id;
statuses come from the one catalogue (serve.errors); never a stack trace."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.api.deps import request_id_of
from serve.errors import CATALOGUE, CODE_OF_HTTP_STATUS, ServeError


def error_response(
    request: Request,
    code: str,
    message: str,
    *,
    status: int | None = None,
    retry_after: int | None = None,
    fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message, "request_id": request_id_of(request)}
    if fields is not None:
        body["fields"] = fields
    request.scope.setdefault("state", {})["error"] = code
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(body, status_code=status or CATALOGUE[code].status, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _serve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServeError)
    return error_response(request, exc.code, exc.message, retry_after=exc.retry_after, fields=exc.fields)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        elif tuple(error.get("loc", ())) == ("body",):
            message = "the body must be a JSON object sent with Content-Type: application/json"
        elif error.get("type") == "extra_forbidden":
            message = "unknown field"
        fields.append({"field": _field_name(tuple(error.get("loc", ()))), "message": message})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return error_response(request, "invalid_request", summary, fields=fields)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = CODE_OF_HTTP_STATUS.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
    return error_response(request, code, str(exc.detail), status=exc.status_code, headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Anything else is answered by serve/api/middleware.py (a 500 with X-Request-ID, logged).
