"""The one error vocabulary: every error a client or a job can see has a code in CATALOGUE, and
the code alone decides its HTTP status, its default Retry-After and what a job does with it.

Handlers (serve/api/errors.py), the OpenAPI `responses` tables, the queued /predict and the job
worker all read this table; nothing else maps codes to statuses. No web framework here: the core,
the job layer and the adapters raise ServeError, and only serve/api turns it into a response.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What a failure means for whoever would try again (the job worker decides by kind only)."""

    CLIENT = "client"  # the request is wrong or refused: final, the same request fails again
    TRANSIENT = "transient"  # the run failed for a reason of the moment (busy, GPU fault, lost worker): run again
    UPLOAD = "upload"  # the video exists and is kept; only its upload failed: upload again, never regenerate
    CANCELED = "canceled"  # someone asked for it to stop
    FAULT = "fault"  # our own failure that a retry of the same work would not fix


@dataclass(frozen=True)
class Entry:
    status: int
    kind: Kind
    description: str
    retry_after: int | None = None


_C, _T, _U, _X, _F = Kind.CLIENT, Kind.TRANSIENT, Kind.UPLOAD, Kind.CANCELED, Kind.FAULT

CATALOGUE: dict[str, Entry] = {
    # Requests the server refuses.
    "bad_request": Entry(400, _C, "The request is malformed"),
    "unauthorized": Entry(401, _C, "Missing or invalid API key"),
    "forbidden": Entry(403, _C, "Not allowed"),
    "not_found": Entry(404, _C, "No such resource (or not this tenant's)"),
    "method_not_allowed": Entry(405, _C, "Method not allowed on this path"),
    "destination_exists": Entry(409, _C, "gcs_destination already holds another object (never overwritten)"),
    "not_finished": Entry(409, _C, "The job has not finished yet"),
    "idempotency_conflict": Entry(409, _C, "The idempotency key was used before with another body"),
    "body_too_large": Entry(413, _C, "Request body too large"),
    "input_too_large": Entry(413, _C, "An input file, or its frame size, is larger than this server accepts"),
    "input_too_long": Entry(413, _C, "An input is longer than this server accepts"),
    "unsupported_media_type": Entry(415, _C, "Unsupported content type"),
    "invalid_request": Entry(422, _C, "A field breaks a rule; `fields` names it"),
    "unsafe_url": Entry(422, _C, "An input or webhook URL points somewhere this server will not go"),
    "input_unreachable": Entry(422, _C, "An input could not be downloaded"),
    "invalid_video": Entry(422, _C, "video_in is not a usable video"),
    "invalid_audio": Entry(422, _C, "audio_in is not usable audio"),
    "invalid_image": Entry(422, _C, "image is not a usable PNG, JPEG or WebP picture"),
    "no_face_detected": Entry(422, _C, "No face in the first frames of video_in"),
    "client_disconnected": Entry(499, _X, "The client disconnected while queued"),
    "canceled": Entry(499, _X, "Canceled"),
    # Failures of the moment: try again (a job is retried by its worker).
    "busy": Entry(503, _T, "The GPU queue is full; see Retry-After", 30),
    "not_ready": Entry(503, _T, "The model is not loaded yet (or its setup failed)", 10),
    "draining": Entry(503, _T, "This server is shutting down; another takes the retry", 30),
    "shutting_down": Entry(503, _T, "The server stopped before the work finished", 5),
    "queue_timeout": Entry(503, _T, "The request waited too long for the GPU", 30),
    "queue_unavailable": Entry(503, _T, "The job could not be queued", 10),
    "downloads_busy": Entry(503, _T, "Too many input downloads at once on this server", 10),
    "disk_full": Entry(503, _T, "This server's disk is below its free-space floor", 60),
    "gpu_out_of_memory": Entry(503, _T, "The GPU ran out of memory for this request", 5),
    "generation_failed": Entry(500, _T, "The generation failed; quote the request id"),
    "worker_lost": Entry(500, _T, "Every worker that took the job died before finishing it"),
    "upload_failed": Entry(503, _U, "Generated and kept; the upload failed and is retried", 60),
    # Our own faults.
    "storage_failed": Entry(500, _F, "The video was generated but could not be stored"),
    "generation_timeout": Entry(504, _F, "The generation ran past its deadline"),
    "internal_error": Entry(500, _F, "Internal error; quote the request id"),
}

# Starlette's own HTTP errors (an unknown path, a wrong method, ...) by status.
CODE_OF_HTTP_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ServeError(Exception):
    """An error with a catalogued code; its status and kind come from the catalogue, never the raiser."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after: int | None = None,
        fields: list[dict[str, str]] | None = None,
    ) -> None:
        if code not in CATALOGUE:
            raise ValueError(f"error code {code!r} is not in serve.errors.CATALOGUE")
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields
        self.retry_after = retry_after if retry_after is not None else CATALOGUE[code].retry_after

    @property
    def status(self) -> int:
        return CATALOGUE[self.code].status

    @property
    def kind(self) -> Kind:
        return CATALOGUE[self.code].kind

    def to_dict(self) -> dict[str, str]:
        """What a job stores: the code and message; the status is looked up again when read."""
        return {"code": self.code, "message": self.message}


def invalid_field(field: str, message: str) -> ServeError:
    """A 422 naming the field that broke a rule."""
    return ServeError("invalid_request", f"{field}: {message}", fields=[{"field": field, "message": message}])


def from_stored(error: dict[str, str]) -> ServeError:
    """The ServeError a job stored (by code), so a queued /predict answers what a direct one would."""
    code = error.get("code", "internal_error")
    return ServeError(code if code in CATALOGUE else "internal_error", str(error.get("message", code)))
