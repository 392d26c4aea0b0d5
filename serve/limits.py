"""The server's configured request bounds: enforced per request, published in /openapi.json."""

from __future__ import annotations

from typing import Any

from serve.config import Settings
from serve.errors import invalid_field
from serve.schemas import PredictRequest


def check_limits(body: PredictRequest, settings: Settings) -> None:
    """Raise a 422 naming the first field outside this server's configured bounds."""
    bounds = (
        ("prompt", len(body.prompt), 1, settings.max_prompt_chars, "characters"),
        ("negative_prompt", len(body.negative_prompt), 0, settings.max_prompt_chars, "characters"),
        ("height", body.height, settings.min_side, settings.max_height, "pixels"),
        ("width", body.width, settings.min_side, settings.max_width, "pixels"),
        ("num_frames", body.num_frames, 9, settings.max_num_frames, "frames"),
        ("num_inference_steps", body.num_inference_steps, 2, settings.max_inference_steps, "steps"),
        ("fps", body.fps, 1, settings.max_fps, "frames per second"),
    )
    for field, value, low, high, unit in bounds:
        if not low <= value <= high:
            raise invalid_field(field, f"must be between {low} and {high} {unit} on this server, got {value}")
    volume = body.height * body.width * body.num_frames
    if volume > settings.max_video_pixels:
        raise invalid_field(
            "num_frames",
            f"height x width x num_frames = {volume} exceeds this server's cap of {settings.max_video_pixels}; "
            "use fewer frames or a smaller size",
        )
    if body.gcs_destination is not None and settings.gcs_output_bucket is None:
        # Refused rather than ignored: accepting it without uploading would lose the video
        # the client asked for.
        raise invalid_field("gcs_destination", "this server has no Cloud Storage output configured")


def publish_limits(schema: dict[str, Any], settings: Settings) -> None:
    """Write the configured bounds into the OpenAPI document, so clients see the real ones."""
    properties = schema["components"]["schemas"]["PredictRequest"]["properties"]
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
