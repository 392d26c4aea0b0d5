"""All configuration, from environment variables (or a `.env` file). Nothing else reads os.environ."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server settings; each field is the upper-case environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where the server runs.
    environment: Literal["local", "gce"] = Field(
        "local", description="`local` may generate an API key; `gce` never does"
    )
    host: str = Field("127.0.0.1", description="Address the API listens on (0.0.0.0 on a VM)")
    port: int = Field(8080, ge=1, le=65535, description="API port (the load balancer's backend port)")
    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus metrics listener")
    metrics_port: int = Field(
        9090, ge=0, le=65535, description="Prometheus metrics port, apart from the API (0: any free port)"
    )
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at all")
    keep_alive_seconds: int = Field(
        620, ge=1, description="HTTP keep-alive; must exceed the Google load balancer's 600 s or it returns 502s"
    )
    public_url: str | None = Field(
        None, description="Base URL for `video_url` in local mode; default: the request's own"
    )
    log_level: str = Field("INFO", description="Python log level")
    gcp_project: str | None = Field(
        None, description="Project id; links request logs to Cloud Trace (`logging.googleapis.com/trace`)"
    )

    role: Literal["all", "api"] = Field(
        "all",
        description="`all`: serve the API and run the model; `api`: the API only, no model or GPU (a gateway; "
        "needs JOBS_ENABLED and PREDICT_VIA_QUEUE, and never runs jobs)",
    )

    # The model.
    model: str = Field(
        "ltx-video-tiny",
        description="Backend: `ltx-video`, `ltx-video-tiny` (text-to-video); `latentsync`, `latentsync-tiny` "
        "(lip-sync)",
    )
    model_alias: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9-]{0,39}$",
        description="The name this server's model has behind a load balancer with several models (`/models/<name>/`); "
        "jobs carry it as the Pub/Sub attribute `model`, which each model's worker subscription filters on. "
        "Empty: the MODEL name",
    )
    model_path: str | None = Field(
        None, description="ltx-video: local diffusers directory or hub id; latentsync: the checkpoint directory"
    )
    model_revision: str | None = Field(None, description="Model revision, reported in responses; a hub revision")
    device: str = Field("auto", description="`auto`, `cpu`, `cuda` or `cuda:N`")
    dtype: str = Field("auto", description="`auto` (bf16 on CUDA, float32 on CPU), `float32`, `bfloat16`, `float16`")
    vae_tiling: bool = Field(False, description="Decode the VAE in tiles to cut peak memory (ltx-video)")
    ltx_mode: Literal["exact", "fast"] = Field(
        "exact", description="ltx-video: `exact` (within bf16 noise of diffusers) or `fast` (trades measured fidelity)"
    )
    ltx_compile: Literal["auto", "on", "off"] = Field(
        "auto", description="ltx-video: regional torch.compile of the transformer block (`auto`: on CUDA)"
    )
    ltx_attention_backend: str = Field(
        "auto", description="ltx-video: diffusers attention backend (`auto`: cuDNN, flash, native on CUDA; `off`)"
    )
    ltx_fuse_qkv: Literal["auto", "on", "off"] = Field(
        "off",
        description="ltx-video: fused QKV projections; off (and `auto`): LTX's attention never calls the fused "
        "layer, which would only add weights (1.31 GiB bf16 at 2B)",
    )
    ltx_cache_threshold: float = Field(
        0.05, ge=0, description="ltx-video fast mode: first-block cache threshold (0: off)"
    )
    ltx_fp8: bool = Field(True, description="ltx-video fast mode: fp8 matmuls via torchao when installed (CUDA)")
    ltx_cuda_graphs: Literal["on", "off"] = Field(
        "off", description="ltx-video: CUDA graphs for the compiled blocks (reduce-overhead; opt-in, unmeasured)"
    )
    text_encoder_offload: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Keep the text encoder in host memory between requests (`auto`: on CUDA when the card cannot "
        "hold every weight plus 12 GiB for a request, as on an L4; an 80 GB card keeps it resident)",
    )
    compile_cache_dir: Path | None = Field(
        None, description="Where torch.compile caches its artefacts, so a restart does not compile again"
    )
    warmup: bool = Field(True, description="Run one small generation at start; /health is 200 only after it succeeds")

    # API keys (local mode; Secret Manager comes with the Google Cloud integration).
    api_keys: str = Field("", description="Comma-separated API keys; several allow rotation")
    api_key_file: Path | None = Field(None, description="File with one API key per line (# comments allowed)")
    api_key_secret: str | None = Field(
        None, description="Secret Manager secret `projects/P/secrets/NAME`; every ENABLED version is a key"
    )
    api_key_refresh_seconds: float = Field(300, gt=0, description="How often the secret's versions are re-read")
    secret_manager_endpoint: str | None = Field(None, description="Secret Manager REST endpoint for tests (anonymous)")

    # Request limits.
    max_body_bytes: int = Field(65536, ge=1024, description="Largest request body accepted (413 beyond)")
    max_prompt_chars: int = Field(2000, ge=1, le=100_000, description="Longest prompt or negative prompt")
    min_side: int = Field(64, ge=32, description="Smallest height or width (a multiple of 32)")
    max_height: int = Field(1280, ge=32, description="Largest height (a multiple of 32)")
    max_width: int = Field(1280, ge=32, description="Largest width (a multiple of 32)")
    max_num_frames: int = Field(257, ge=9, description="Most frames (of the form 8k+1)")
    max_video_pixels: int = Field(
        120_000_000, ge=1, description="Cap on height x width x num_frames, so no request exhausts GPU memory"
    )
    max_inference_steps: int = Field(100, ge=2, description="Most denoising steps")
    max_fps: int = Field(60, ge=1, description="Highest frame rate")

    # The runner.
    queue_size: int = Field(2, ge=0, description="Requests that may wait for the GPU; beyond it, 503 with Retry-After")
    queue_timeout_seconds: float = Field(600, gt=0, description="Longest wait in the queue before a 503")
    generation_timeout_seconds: float = Field(
        1800, gt=0, description="Longest generation; stopped at the next step after it"
    )
    drain_timeout_seconds: float = Field(
        60,
        ge=0,
        description="On SIGTERM: how long queued and running work may take to finish before it fails with 503",
    )

    # Asynchronous jobs: a local SQLite file, or Pub/Sub + Firestore.
    jobs_enabled: bool | None = Field(
        None,
        description="Serve the job API (`/jobs`, `/process`, `/status`, `/result`, events); default: on when "
        "ENVIRONMENT=local, off on `gce` unless set",
    )
    jobs_backend: Literal["auto", "sqlite", "gcp"] = Field(
        "auto",
        description="`sqlite`: jobs and their queue in one local file (JOBS_DB), no cloud; `gcp`: Pub/Sub + "
        "Firestore; `auto`: sqlite when ENVIRONMENT=local, gcp on `gce`",
    )
    jobs_db: Path | None = Field(None, description="The SQLite job file; default OUTPUT_DIR/jobs.sqlite")
    jobs_worker: bool = Field(True, description="With jobs enabled: also run queued jobs on this server's GPU")
    jobs_project: str | None = Field(None, description="Project of the topic and database; default: GCP_PROJECT")
    firestore_database: str = Field("(default)", description="Firestore database (native mode) holding the jobs")
    jobs_collection: str = Field(
        "jobs", description="Firestore collection of job documents (each holds its usage: gpu_seconds, bytes_out)"
    )
    pubsub_topic: str = Field(
        "videogen-jobs", description="Pub/Sub topic jobs are published to (with SQLite: the queue's name in the file)"
    )
    pubsub_subscription: str = Field("videogen-jobs-worker", description="Pull subscription the workers read")
    pubsub_dead_letter_topic: str = Field(
        "videogen-jobs-dead-letter", description="Where jobs that failed every attempt are published"
    )
    predict_via_queue: bool = Field(
        False, description="With jobs enabled: /predict enqueues a job and waits for it (same response)"
    )
    webhook_secret: str | None = Field(
        None, description="HMAC key that signs job webhooks (`whsec_<base64>` or text); unset: `webhook_url` refused"
    )
    webhook_allow_private: bool = Field(
        False, description="Allow webhooks to private and loopback addresses (never link-local or metadata)"
    )
    webhook_max_attempts: int = Field(6, ge=1, le=20, description="Deliveries of one webhook before giving up")
    job_max_attempts: int = Field(
        3, ge=1, le=100, description="Attempts before a crashing job fails (the subscription's dead-letter limit)"
    )
    job_lease_seconds: float = Field(
        60, ge=10, description="A running job's lease; another worker may take it over after"
    )
    job_heartbeat_seconds: float | None = Field(
        None,
        gt=0,
        description="How often a running job's lease and progress are renewed; default 1 on SQLite, 5 on GCP "
        "(each one a Firestore write)",
    )
    job_ttl_days: int = Field(30, ge=1, description="Days until a job document expires (`expire_at`, a TTL field)")

    # LatentSync (MODEL=latentsync / latentsync-tiny).
    latentsync_variant: Literal["1.5", "1.6"] = Field("1.6", description="1.5: 256 px faces, 1.6: 512 px faces")
    latentsync_deepcache: bool = Field(True, description="Reuse deep UNet features between steps (upstream default)")
    latentsync_deepcache_interval: int = Field(3, ge=1, le=10, description="DeepCache: a full UNet pass every N steps")
    latentsync_face_grace_frames: int = Field(
        25, ge=1, description="No face in this many first frames fails the request with `no_face_detected`"
    )
    latentsync_face_reuse_frames: int = Field(
        12,
        ge=0,
        description="A face lost for more frames in a row than this (after one was seen) fails the request with "
        "`no_face_detected` naming the frames; shorter gaps reuse the last face found",
    )
    lipsync_max_seconds: float = Field(60, gt=0, description="Longest speech or video input (413 `input_too_long`)")
    lipsync_max_pixels: int = Field(
        1920 * 1080, ge=4096, description="Largest video_in frame, width x height (413 `input_too_large`)"
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Image-to-video: the largest `image` accepted, in pixels (read from its header)"
    )
    fetch_max_bytes: int = Field(
        512 * 1024**2, ge=1024, description="Largest video_in / audio_in / image download (413 `input_too_large`)"
    )
    fetch_timeout_seconds: float = Field(60, gt=0, description="Time one input download may take in all")
    fetch_max_concurrent: int = Field(
        4, ge=1, le=64, description="Input downloads at once; beyond, 503 `downloads_busy` with Retry-After"
    )
    input_buckets: str = Field(
        "",
        description="Buckets `gs://` inputs may come from, comma-separated (empty: no gs:// inputs); the output "
        "bucket is not an input unless listed",
    )
    upload_max_bytes: int = Field(
        512 * 1024**2, ge=1024, description="Largest file `POST /uploads` takes (413 `body_too_large` beyond)"
    )
    upload_ttl_seconds: int = Field(
        86400, ge=60, description="How long an upload stays usable as an input; then it is deleted"
    )
    upload_dir: Path | None = Field(
        None,
        description="Where uploads are kept when there is no UPLOAD_BUCKET (local mode); default OUTPUT_DIR/uploads",
    )
    upload_bucket: str | None = Field(
        None,
        description="Bucket for uploads (`uploads/<tenant tag>/<id>`), which every VM can read; unset on `gce`: "
        "uploads are refused",
    )
    fetch_allow_loopback: bool = Field(
        False, description="TESTS ONLY: allow http:// and loopback input URLs (never on a server)"
    )

    # Output.
    output_dir: Path = Field(Path("outputs"), description="Where videos are written and served from")
    temp_dir: Path | None = Field(
        None, description="Scratch space for inputs and decoded frames (emptied at start); default OUTPUT_DIR/.tmp"
    )
    temp_max_bytes: int = Field(
        4 * 1024**3,
        ge=1024**2,
        description="Scratch one request's decoded video may take, from its header, before decoding (413 beyond)",
    )
    min_free_disk_bytes: int = Field(
        256 * 1024**2,
        ge=0,
        description="Below this much free space for OUTPUT_DIR, /health is 503 `disk_full` and new work is refused",
    )
    video_crf: int = Field(18, ge=0, le=51, description="x264 constant rate factor (lower is better and larger)")
    video_preset: str = Field("veryfast", description="x264 preset (speed against size)")

    # Cloud Storage output (off unless GCS_OUTPUT_BUCKET is set).
    gcs_output_bucket: str | None = Field(None, description="Bucket for videos (`videos/YYYY/MM/DD/<video id>.mp4`)")
    gcs_allowed_buckets: str = Field("", description="More buckets a `gcs_destination` may name, comma-separated")
    gcs_sign_urls: bool = Field(
        True, description="`video_url` is a V4 signed URL; false: the authenticated console URL"
    )
    gcs_url_lifetime_seconds: int = Field(3600, ge=1, le=604800, description="Lifetime of signed URLs (at most 7 days)")
    gcs_upload_retry_attempts: int = Field(5, ge=0, le=100, description="Background re-tries of a failed upload")
    gcs_upload_retry_delay_seconds: float = Field(
        10, gt=0, description="First background re-try delay (doubles each time)"
    )
    gcs_upload_timeout_seconds: float = Field(
        60, gt=0, description="Time one upload may take, the client's retries included"
    )
    gcs_endpoint: str | None = Field(None, description="Storage endpoint for an emulator (anonymous credentials)")
    gcs_project: str | None = Field(None, description="Project for the storage client; default: from the credentials")

    @property
    def scratch_dir(self) -> Path:
        return self.temp_dir or self.output_dir / ".tmp"

    @property
    def upload_folder(self) -> Path:
        return self.upload_dir or self.output_dir / "uploads"

    @property
    def jobs_on(self) -> bool:
        return self.jobs_enabled if self.jobs_enabled is not None else self.environment == "local"

    @property
    def jobs_store(self) -> Literal["sqlite", "gcp"]:
        if self.jobs_backend != "auto":
            return self.jobs_backend
        return "sqlite" if self.environment == "local" else "gcp"

    @property
    def jobs_db_path(self) -> Path:
        return self.jobs_db or self.output_dir / "jobs.sqlite"

    @property
    def heartbeat_seconds(self) -> float:
        if self.job_heartbeat_seconds is not None:
            return self.job_heartbeat_seconds
        return 1.0 if self.jobs_store == "sqlite" else 5.0

    @property
    def input_bucket_set(self) -> set[str]:
        return {b.strip() for b in self.input_buckets.split(",") if b.strip()}

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name in ("min_side", "max_height", "max_width"):
            if getattr(self, name) % 32:
                raise ValueError(f"{name.upper()} must be a multiple of 32")
        if self.role == "api" and not (self.jobs_on and self.predict_via_queue):
            raise ValueError("ROLE=api needs JOBS_ENABLED and PREDICT_VIA_QUEUE: a gateway sends all work to the queue")
        if self.predict_via_queue and not self.jobs_on:
            raise ValueError("PREDICT_VIA_QUEUE needs JOBS_ENABLED")
        if (self.max_num_frames - 1) % 8:
            raise ValueError("MAX_NUM_FRAMES must be of the form 8k+1")
        return self
