"""Request and response bodies of the public API. Field limits state the rules; the
server's configured bounds (serve/core/limits.py) may be tighter and are published in /openapi.json."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

GCS_URL_PATTERN = r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/[^\x00-\x1f\x7f]{1,1024}$"
SEED_MAX = 2**32 - 1


class PredictRequest(BaseModel):
    """An LTX-Video text-to-video request. Everything but `prompt` is optional."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=100_000, description="What the video shows")
    negative_prompt: str = Field("", max_length=100_000, description="What the video should not show")
    seed: int = Field(171198, ge=0, le=SEED_MAX, description="Same seed and parameters give the same video")
    height: int = Field(704, ge=32, le=4096, multiple_of=32, description="Pixels, a multiple of 32")
    width: int = Field(1216, ge=32, le=4096, multiple_of=32, description="Pixels, a multiple of 32")
    num_frames: int = Field(121, ge=9, le=1025, description="Frames, of the form 8k+1 (9, 17, ..., 121, ...)")
    # At least 2: LTX-Video's scheduler stretches sigmas to a terminal value, which is
    # undefined (a division by zero in diffusers) for a single step.
    num_inference_steps: int = Field(50, ge=2, le=1000, description="Denoising steps (at least 2)")
    fps: int = Field(24, ge=1, le=240, description="Frame rate of the MP4 (also conditions the model)")
    guidance_scale: float = Field(3.0, ge=1.0, le=20.0, description="Classifier-free guidance; 1.0 turns it off")
    gcs_destination: str | None = Field(
        None, pattern=GCS_URL_PATTERN, description="`gs://bucket/path.mp4` to store the video at (Cloud Storage only)"
    )
    image: str | None = Field(
        None,
        min_length=6,
        max_length=2048,
        description="Image-to-video: `gs://bucket/object` (from INPUT_BUCKETS), `https://...` or `upload://<id>` "
        "(POST /uploads), a PNG, JPEG or WebP picture the video starts from, fitted to height x width",
    )

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain more than whitespace")
        return value

    @field_validator("num_frames")
    @classmethod
    def _eight_k_plus_one(cls, value: int) -> int:
        if (value - 1) % 8:
            raise ValueError(f"num_frames must be of the form 8k+1 (e.g. {value - (value - 1) % 8}), got {value}")
        return value

    @field_validator("gcs_destination")
    @classmethod
    def _mp4_object(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".mp4"):
            raise ValueError("gcs_destination must name an .mp4 object, e.g. gs://bucket/videos/clip.mp4")
        return value


class LipSyncPredictRequest(BaseModel):
    """A LatentSync lip-sync request (MODEL=latentsync): a face video and a speech track in,
    the same video with the mouth following the speech out (as long as the speech plus two frames, as
    upstream, with the speech)."""

    model_config = ConfigDict(extra="forbid")

    video_in: str = Field(
        min_length=6,
        max_length=2048,
        description="`gs://bucket/object`, `https://...` or `upload://<id>` (POST /uploads): the video of a face",
    )
    audio_in: str = Field(
        min_length=6,
        max_length=2048,
        description="`gs://bucket/object`, `https://...` or `upload://<id>` (POST /uploads): the speech (any format)",
    )
    guidance_scale: float = Field(1.5, ge=1.0, le=3.0, description="Audio guidance; 1.0 turns it off")
    inference_steps: int = Field(20, ge=10, le=50, description="DDIM steps")
    seed: int = Field(1247, ge=0, le=SEED_MAX, description="Same seed and inputs give the same video")
    gcs_destination: str | None = Field(
        None, pattern=GCS_URL_PATTERN, description="`gs://bucket/path.mp4` to store the video at"
    )
    out: str | None = Field(None, pattern=GCS_URL_PATTERN, description="Another name for gcs_destination")

    @field_validator("video_in", "audio_in")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("gs://", "https://", "http://", "upload://")):
            raise ValueError(
                "must be a gs:// or https:// URL, or an upload:// reference from POST /uploads (local paths and "
                "other schemes are refused; upload a local file first)"
            )
        return value

    @field_validator("gcs_destination", "out")
    @classmethod
    def _mp4_object(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".mp4"):
            raise ValueError("must name an .mp4 object, e.g. gs://bucket/videos/clip.mp4")
        return value

    @field_validator("out")
    @classmethod
    def _one_destination(cls, value: str | None, info: ValidationInfo) -> str | None:
        other = info.data.get("gcs_destination")
        if value is not None and other is not None and value != other:
            raise ValueError("give gcs_destination or out, not two different ones")
        return value

    def destination(self) -> str | None:
        return self.gcs_destination or self.out


class PredictMetadata(BaseModel):
    """How a video was made."""

    model: str
    revision: str
    request_id: str
    parameters: dict[str, Any]
    recipe: str | None = Field(
        None,
        description="How the checkpoint runs (LTX-Video: its version; a distilled one fixes its steps and "
        "turns guidance off, whatever parameters say)",
    )
    timings: dict[str, float] = Field(description="Seconds per stage: queue, encode_prompt, denoise, decode, ...")


class PredictResponse(BaseModel):
    """Where the video is and how it was made."""

    video_url: str = Field(description="Where to download the video (needs X-API-Key in local mode)")
    video_path: str = Field(description="The video's path: a local file, or gs://bucket/object")
    seed: int
    gcs_bucket: str | None = Field(description="Bucket holding the video; null when stored locally")
    gcs_blob: str | None = Field(description="Object name of the video; null when stored locally")
    generation_time_seconds: float = Field(description="From the GPU taking the request to the stored video")
    metadata: PredictMetadata


class ErrorResponse(BaseModel):
    """Every error: a stable code, a message for people and the request id."""

    error: str = Field(description="Stable machine-readable code, e.g. invalid_request, unauthorized, busy")
    message: str
    request_id: str
    fields: list[dict[str, str]] | None = Field(None, description="For invalid_request: each field and what is wrong")


class Lifecycle(StrEnum):
    """Where the server is in its life; /health is 200 only in READY and BUSY."""

    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    SETUP_FAILED = "setup_failed"
    GPU_FAILED = "gpu_failed"
    NO_API_KEYS = "no_api_keys"
    DISK_FULL = "disk_full"
    DRAINING = "draining"

    def is_serving(self) -> bool:
        return self in (Lifecycle.READY, Lifecycle.BUSY)


class HealthResponse(BaseModel):
    """The server's state, and why when it cannot serve."""

    status: Lifecycle
    reason: str | None = None
    model: str
    queue_depth: int = Field(description="Requests waiting for the GPU")
    in_flight: int = Field(description="Requests waiting or running; a drain is done when it reaches 0")


class _JobFields(BaseModel):
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A repeat with the same key (and tenant) returns the same job instead of a new one",
    )
    webhook_url: str | None = Field(
        None, max_length=2000, description="POSTed the job, signed, when it ends (http(s), public addresses only)"
    )


class JobRequest(PredictRequest, _JobFields):
    """A job: the /predict body, plus an optional idempotency key and webhook."""


class LipSyncJobRequest(LipSyncPredictRequest, _JobFields):
    """A lip-sync job (MODEL=latentsync): the lip-sync /predict body, plus the job fields."""


class JobProgress(BaseModel):
    step: int
    total: int
    fraction: float


class JobError(BaseModel):
    code: str
    message: str


class JobResponse(BaseModel):
    """A job's state; `result` is what /predict would have answered."""

    job_id: str
    status: str = Field(description="queued | running | succeeded | failed | canceled")
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int = Field(description="Times a worker started it (more than 1 after a crash or a lost VM)")
    progress: JobProgress
    queue_position: int | None = Field(None, description="While queued: 1 is next")
    result: PredictResponse | None = None
    error: JobError | None = None
    links: dict[str, str]


class JobLogResponse(BaseModel):
    job_id: str
    lines: list[dict[str, str]]


class UploadResponse(BaseModel):
    """An uploaded input file; name it by `url` as `video_in`, `audio_in` or `image`."""

    upload_id: str
    url: str = Field(description="`upload://<id>`: the reference to put in a request")
    kind: str = Field(description="video | audio | image, from the file's first bytes")
    content_type: str
    bytes: int
    created_at: str
    expires_at: str = Field(description="After this, requests naming it fail with `input_unreachable`")
