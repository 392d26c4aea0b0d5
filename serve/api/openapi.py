"""What /openapi.json says beyond the routes themselves: each route's error responses, read from
the one catalogue, and this server's configured bounds in the request schema."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from serve.config import Settings
from serve.errors import CATALOGUE
from serve.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]

# Codes any authenticated generation can end with; a task adds its own input errors.
GENERATION_ERRORS = (
    "unauthorized",
    "body_too_large",
    "invalid_request",
    "destination_exists",
    "client_disconnected",
    "generation_failed",
    "storage_failed",
    "busy",
    "not_ready",
    "draining",
    "queue_timeout",
    "gpu_out_of_memory",
    "upload_failed",
    "shutting_down",
    "disk_full",
    "generation_timeout",
)
JOB_ERRORS = ("unauthorized", "not_found")


def responses(*codes: str) -> Responses:
    """The OpenAPI `responses` table for routes that can end with `codes`: one entry per status,
    listing every code it carries."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        by_status[CATALOGUE[code].status].append(code)
    return {
        status: {
            "model": ErrorResponse,
            "description": "; ".join(f"`{code}`: {CATALOGUE[code].description}" for code in sorted(names)),
        }
        for status, names in sorted(by_status.items())
    }


def as_json(table: Responses) -> Responses:
    """`table` for a route whose own answer is not JSON (an event stream): its errors still are."""
    ref = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
    return {
        status: {"description": entry["description"], "content": {"application/json": {"schema": ref}}}
        for status, entry in table.items()
    }


def publish_limits(schema: dict[str, Any], settings: Settings) -> None:
    """Write the configured bounds into the OpenAPI document, so clients see the real ones."""
    properties = schema["components"]["schemas"].get("PredictRequest", {}).get("properties")
    if properties is None:  # a lip-sync server has no text-to-video body
        return
    updates = {
        "prompt": {"maxLength": settings.max_prompt_chars},
        "negative_prompt": {"maxLength": settings.max_prompt_chars},
        "height": {"minimum": settings.min_side, "maximum": settings.max_height},
        "width": {"minimum": settings.min_side, "maximum": settings.max_width},
        # 8k+1 cannot be written with multipleOf; the allowed values are few enough to list.
        "num_frames": {"maximum": settings.max_num_frames, "enum": list(range(9, settings.max_num_frames + 1, 8))},
        "num_inference_steps": {"maximum": settings.max_inference_steps},
        "fps": {"maximum": settings.max_fps},
    }
    for name, values in updates.items():
        properties[name].update(values)
    properties["num_frames"]["description"] += (
        f"; height x width x num_frames may be at most {settings.max_video_pixels}"
    )
