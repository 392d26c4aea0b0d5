"""One spec per task (text-to-video, lip-sync): the request bodies it takes, what is checked
before it queues, how a body becomes the backend's request, and its warm-up. Everything that
differs between tasks is here; the rest of the server asks the spec instead of branching.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from models.base import GenerationRequest, LipSyncRequest
from serve.config import Settings
from serve.core.limits import check_limits
from serve.errors import ServeError, invalid_field
from serve.io.fetch import FetchPolicy, check_url, fetch
from serve.io.gcs import GcsOutput
from serve.io.images import check_image
from serve.io.uploads import SCHEME as UPLOAD_SCHEME
from serve.io.uploads import UploadStore, resolve
from serve.obs.metrics import Metrics
from serve.schemas import JobRequest, LipSyncJobRequest, LipSyncPredictRequest, PredictRequest

log = logging.getLogger("serve.core.tasks")

Body = PredictRequest | LipSyncPredictRequest
ModelRequest = GenerationRequest | LipSyncRequest


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    """What the specs need from the server: its settings, its output, a storage client, the
    uploads (`upload://` inputs), and the slots for input downloads (FETCH_MAX_CONCURRENT)."""

    settings: Settings
    metrics: Metrics
    gcs: GcsOutput | None
    storage_client: Callable[[], Any]
    uploads: UploadStore | None = None
    downloads: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(4))


@dataclass(frozen=True)
class Prepared:
    """The backend's request, and a scratch folder to remove once the run is over."""

    request: ModelRequest
    scratch: Path | None = None

    def cleanup(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


class TaskSpec:
    """The contract; one subclass per task."""

    name: ClassVar[str]
    predict_body: ClassVar[type[BaseModel]]
    job_body: ClassVar[type[BaseModel]]
    warmup: ClassVar[ModelRequest]
    # Codes a request of this task may end with, beyond every task's (for the OpenAPI tables).
    input_errors: ClassVar[tuple[str, ...]] = ()

    def destination(self, body: Any) -> str | None:
        return body.gcs_destination

    def check(self, body: Any, ctx: TaskContext, *, tenant: str) -> None:
        """Refuse what can be refused before the request takes a place in a queue (blocking: DNS)."""
        requested = self.destination(body)
        if requested is not None:
            if ctx.gcs is None:
                # Refused rather than ignored: accepting it without uploading would keep the video
                # somewhere the client did not ask for.
                raise invalid_field("gcs_destination", "this server has no Cloud Storage output configured")
            ctx.gcs.destination("check", requested)  # the bucket must be an allowed one

    async def prepare(self, body: Any, ctx: TaskContext, request_id: str, *, tenant: str) -> Prepared:
        raise NotImplementedError


def input_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=settings.fetch_max_bytes,
        timeout=settings.fetch_timeout_seconds,
        allow_loopback=settings.fetch_allow_loopback,
        input_buckets=frozenset(settings.input_bucket_set),
    )


def check_input(url: str, field: str, ctx: TaskContext, tenant: str) -> None:
    """An input URL this server would fetch for `tenant`: an upload of theirs of the right kind, or
    a gs:// / https:// URL its policy allows."""
    if url.startswith(UPLOAD_SCHEME):
        resolve(ctx.uploads, tenant, url, field)
    else:
        check_url(url, field, input_policy(ctx.settings))


def _fetch_one(url: str, target: Path, field: str, ctx: TaskContext, tenant: str, policy: FetchPolicy) -> int:
    if url.startswith(UPLOAD_SCHEME):
        return resolve(ctx.uploads, tenant, url, field, target).bytes
    return fetch(ctx.storage_client, url, target, field, policy)


async def fetch_inputs(urls: dict[str, str], ctx: TaskContext, request_id: str, tenant: str) -> Path:
    """Download each field's URL (or copy its upload) to `<scratch>/<field>` before the request
    takes a place in the GPU queue, holding one of the server's download slots (503
    `downloads_busy` when none is free)."""
    if not ctx.downloads.acquire(blocking=False):
        ctx.metrics.rejected.labels("downloads_busy").inc()
        raise ServeError("downloads_busy", "this server is downloading as many inputs as it may; retry shortly")
    ctx.settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="videogen-inputs-", dir=ctx.settings.scratch_dir))
    policy = input_policy(ctx.settings)
    try:
        for name, url in urls.items():
            started = time.perf_counter()
            try:
                size = await asyncio.to_thread(_fetch_one, url, folder / name, name, ctx, tenant, policy)
            except ServeError as exc:
                ctx.metrics.rejected.labels(exc.code).inc()
                raise
            seconds = round(time.perf_counter() - started, 3)
            log.info(
                "input fetched", extra={"request_id": request_id, "field": name, "bytes": size, "seconds": seconds}
            )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        ctx.downloads.release()
    return folder


class TextToVideo(TaskSpec):
    name = "text-to-video"
    predict_body = PredictRequest
    job_body = JobRequest
    # Small enough to take seconds, large enough to run every layer of the model once.
    warmup = GenerationRequest(prompt="warm-up", height=64, width=64, num_frames=9, num_inference_steps=2)
    input_errors = ("unsafe_url", "input_unreachable", "input_too_large", "invalid_image", "downloads_busy")

    def check(self, body: PredictRequest, ctx: TaskContext, *, tenant: str) -> None:
        check_limits(body, ctx.settings)
        super().check(body, ctx, tenant=tenant)
        if body.image is not None:
            check_input(body.image, "image", ctx, tenant)

    async def prepare(self, body: PredictRequest, ctx: TaskContext, request_id: str, *, tenant: str) -> Prepared:
        fields = PredictRequest.model_fields.keys() - {"gcs_destination", "image"}
        request = GenerationRequest(**body.model_dump(include=fields))
        if body.image is None:
            return Prepared(request)
        folder = await fetch_inputs({"image": body.image}, ctx, request_id, tenant)
        try:
            await asyncio.to_thread(check_image, folder / "image", "image", ctx.settings.max_image_pixels)
        except BaseException as exc:
            if isinstance(exc, ServeError):
                ctx.metrics.rejected.labels(exc.code).inc()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return Prepared(replace(request, image_path=folder / "image"), scratch=folder)


class LipSync(TaskSpec):
    name = "lip-sync"
    predict_body = LipSyncPredictRequest
    job_body = LipSyncJobRequest
    # Every model once on synthetic input (see LatentSyncBackend._warmup).
    warmup = LipSyncRequest(video_path=Path(), audio_path=Path(), warmup=True)
    input_errors = (
        "unsafe_url",
        "input_unreachable",
        "input_too_large",
        "input_too_long",
        "invalid_video",
        "invalid_audio",
        "no_face_detected",
        "downloads_busy",
    )
    _FIELDS = ("video_in", "audio_in")

    def destination(self, body: LipSyncPredictRequest) -> str | None:
        return body.destination()

    def check(self, body: LipSyncPredictRequest, ctx: TaskContext, *, tenant: str) -> None:
        super().check(body, ctx, tenant=tenant)
        for name in self._FIELDS:
            check_input(getattr(body, name), name, ctx, tenant)

    async def prepare(self, body: LipSyncPredictRequest, ctx: TaskContext, request_id: str, *, tenant: str) -> Prepared:
        """The inputs downloaded first (`fetch_inputs`), then the backend's request over them."""
        fields = {name: getattr(body, name) for name in self._FIELDS}
        folder = await fetch_inputs(fields, ctx, request_id, tenant)
        request = LipSyncRequest(
            video_path=folder / "video_in",
            audio_path=folder / "audio_in",
            guidance_scale=body.guidance_scale,
            num_inference_steps=body.inference_steps,
            seed=body.seed,
        )
        return Prepared(request, scratch=folder)


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (TextToVideo(), LipSync())}


def spec_for(task: str) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"no task spec for {task!r}; known: {', '.join(sorted(TASKS))}") from None
