"""POST /uploads: a local file becomes an input reference (`upload://<id>`) for `video_in`,
`audio_in` or `image`. Multipart with one file field, `file`; its size is capped as it arrives
(UPLOAD_MAX_BYTES, by serve.api.middleware), its kind sniffed from its first bytes, and it belongs
to the caller's tenant until it expires (UPLOAD_TTL_SECONDS)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import IO

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from serve.api.deps import Caller, SettingsDep, UploadsDep
from serve.api.openapi import responses
from serve.errors import ServeError, invalid_field
from serve.io.uploads import HEAD_BYTES, sniff
from serve.schemas import UploadResponse

router = APIRouter(tags=["uploads"])

_TAKES = "MP4, MOV, WebM, MKV, AVI video; WAV, MP3, FLAC, OGG, M4A audio; PNG, JPEG, WebP images"
_MULTIPART = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": _TAKES}},
                }
            }
        },
    }
}


def _copy(head: bytes, source: IO[bytes], target: Path, cap: int) -> None:
    """The file to `target`, refused past `cap` bytes (the middleware's cut allows for framing)."""
    size = len(head)
    with target.open("wb") as out:
        out.write(head)
        while block := source.read(1024 * 1024):
            size += len(block)
            if size > cap:
                raise ServeError("body_too_large", f"the file is larger than {cap} bytes (UPLOAD_MAX_BYTES)")
            out.write(block)


@router.post(
    "/uploads",
    status_code=201,
    response_model=UploadResponse,
    openapi_extra=_MULTIPART,
    responses=responses("unauthorized", "bad_request", "body_too_large", "unsupported_media_type", "invalid_request"),
)
async def upload(request: Request, caller: Caller, uploads: UploadsDep, settings: SettingsDep) -> JSONResponse:
    """Store one input file (multipart field `file`) for this key's tenant; 201 with its
    `upload://` reference, kind and expiry. It is an input only: nothing serves it back."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ServeError("unsupported_media_type", "POST /uploads takes multipart/form-data with one file field `file`")
    async with request.form(max_files=1, max_fields=1) as form:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise invalid_field("file", "send one file as the multipart field `file`")
        head = await file.read(HEAD_BYTES)
        sniffed = sniff(head)
        if sniffed is None:
            raise ServeError("unsupported_media_type", f"the file is not a kind this server takes ({_TAKES})")
        kind, content_type = sniffed
        settings.scratch_dir.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="upload-", dir=settings.scratch_dir)
        os.close(handle)
        target = Path(name)
        try:
            await asyncio.to_thread(_copy, head, file.file, target, settings.upload_max_bytes)
            saved = await asyncio.to_thread(uploads.save, caller.tenant, target, kind, content_type)
        finally:
            target.unlink(missing_ok=True)
    return JSONResponse(UploadResponse(**saved.to_json()).model_dump(mode="json"), status_code=201)
