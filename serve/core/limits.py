"""The server's configured request bounds for text-to-video: enforced per request (and published
in /openapi.json by serve/api/openapi.py)."""

from __future__ import annotations

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
