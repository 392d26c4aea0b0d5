"""The prediction flow: bounds, queue, GPU, MP4, storage, response."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from models.base import GenerationRequest, LipSyncRequest, Video
from serve.config import Settings
from serve.errors import ApiError
from serve.fetch import FetchError, FetchPolicy, fetch
from serve.gcs import Destination, DestinationExists, GcsOutput, UploadFailed
from serve.limits import check_limits
from serve.metrics import Metrics
from serve.runner import GpuRunner, RunnerError, Task
from serve.schemas import LipSyncPredictRequest, PredictMetadata, PredictRequest, PredictResponse
from serve.storage import LocalStore
from serve.video import encode_mp4

log = logging.getLogger("serve.service")
_DISCONNECT_POLL_SECONDS = 0.25


class PredictionService:
    """Turns a validated request into a stored video and its description."""

    def __init__(
        self,
        *,
        settings: Settings,
        runner: GpuRunner,
        store: LocalStore,
        metrics: Metrics,
        gcs: GcsOutput | None = None,
        storage_client: Callable[[], Any] | None = None,
    ) -> None:
        self.storage_client = storage_client
        self.settings = settings
        self.runner = runner
        self.store = store
        self.metrics = metrics
        self.gcs = gcs

    async def predict(
        self,
        body: PredictRequest | LipSyncPredictRequest,
        *,
        request_id: str,
        base_url: str,
        is_disconnected: Callable[[], Awaitable[bool]],
        state: dict[str, Any],
        on_task: Callable[[Task], None] | None = None,
    ) -> PredictResponse:
        # 1. Validate against this server's bounds, and where the video will go; lip-sync
        #    inputs are downloaded here, before the request takes a place in the GPU queue.
        inputs: Path | None = None
        request: GenerationRequest | LipSyncRequest
        if isinstance(body, LipSyncPredictRequest):
            destination = self.gcs.destination(request_id, body.destination()) if self.gcs else None
            inputs = Path(tempfile.mkdtemp(prefix="videogen-inputs-"))
            try:
                request = await self._fetch_inputs(body, request_id, inputs)
            except BaseException:
                shutil.rmtree(inputs, ignore_errors=True)
                raise
        else:
            check_limits(body, self.settings)
            destination = self.gcs.destination(request_id, body.gcs_destination) if self.gcs else None
            request = GenerationRequest(**body.model_dump(exclude={"gcs_destination"}))
        # 2. Queue for the GPU and wait, dropping the request if the client leaves while queued.
        try:
            task = Task(request=request, request_id=request_id, future=asyncio.get_running_loop().create_future())
            try:
                self.runner.submit(task)
            except RunnerError as exc:
                raise _as_api_error(exc) from None
            if on_task is not None:
                on_task(task)
            video = await self._await_result(task, is_disconnected)
        finally:
            if inputs is not None:
                shutil.rmtree(inputs, ignore_errors=True)
        # 3. Encode and store off the event loop; the GPU is already free for the next request.
        path = self.store.path_for(request_id)
        started = time.perf_counter()
        try:
            if video.path is not None:  # streamed to disk by the backend (lip-sync)
                os.replace(video.path, path)
            size = (
                path.stat().st_size
                if video.path is not None
                else await asyncio.to_thread(
                    encode_mp4,
                    video.frames,
                    video.fps,
                    path,
                    crf=self.settings.video_crf,
                    preset=self.settings.video_preset,
                )
            )
        except OSError as exc:  # disk full, output directory gone: fail this request, keep serving
            self.metrics.generations.labels("storage_failed").inc()
            log.error("could not store the video", exc_info=exc, extra={"request_id": request_id})
            raise ApiError(500, "storage_failed", "the video was generated but could not be stored") from None
        video.timings["encode_mp4"] = time.perf_counter() - started
        assert task.started_at is not None
        total = time.monotonic() - task.started_at

        # 4. Upload when Cloud Storage output is configured; a failed upload is kept and retried.
        video_path, video_url = str(path), f"{(self.settings.public_url or base_url).rstrip('/')}/videos/{path.name}"
        if self.gcs is not None and destination is not None:
            video_url = await self._upload(path, destination, request_id, video.timings)
            video_path = destination.uri

        # 5. Describe the result.
        self.metrics.generations.labels("succeeded").inc()
        self.metrics.generation_seconds.observe(total)
        self.metrics.observe_stages(video.timings)
        timings = {k: round(v, 4) for k, v in video.timings.items()}
        state.update(timings=timings, video_path=video_path, bytes=size, gpu_seconds=total)
        described = self.runner.backend.describe()
        log.info("video stored", extra={"request_id": request_id, "bytes": size, "path": video_path})
        return PredictResponse(
            video_url=video_url,
            video_path=video_path,
            seed=body.seed,
            gcs_bucket=destination.bucket if destination else None,
            gcs_blob=destination.blob if destination else None,
            generation_time_seconds=round(total, 3),
            metadata=PredictMetadata(
                model=described["model"],
                revision=described["revision"],
                request_id=request_id,
                parameters=body.model_dump(),
                timings=timings,
            ),
        )

    async def _fetch_inputs(self, body: LipSyncPredictRequest, request_id: str, folder: Path) -> LipSyncRequest:
        policy = FetchPolicy(
            max_bytes=self.settings.fetch_max_bytes,
            timeout=self.settings.fetch_timeout_seconds,
            allow_loopback=self.settings.fetch_allow_loopback,
        )
        paths = {}
        for field in ("video_in", "audio_in"):
            url = getattr(body, field)
            paths[field] = folder / field
            started = time.perf_counter()
            try:
                size = await asyncio.to_thread(fetch, self.storage_client, url, paths[field], field, policy)
            except FetchError as exc:
                self.metrics.rejected.labels(exc.code).inc()
                raise ApiError(exc.status, exc.code, str(exc)) from None
            log.info(
                "input fetched",
                extra={
                    "request_id": request_id,
                    "field": field,
                    "bytes": size,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
        output = self.store.path_for(request_id)
        return LipSyncRequest(
            video_path=paths["video_in"],
            audio_path=paths["audio_in"],
            output_path=output.with_name(f".{output.name}.partial"),
            guidance_scale=body.guidance_scale,
            num_inference_steps=body.inference_steps,
            seed=body.seed,
        )

    async def _upload(self, path: Path, destination: Destination, request_id: str, timings: dict[str, float]) -> str:
        assert self.gcs is not None
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.gcs.upload, path, destination)
        except DestinationExists as exc:
            log.error(
                "destination exists; video kept on local disk", extra={"request_id": request_id, "path": str(path)}
            )
            raise ApiError(
                409, "destination_exists", f"{exc}; the video is kept on the server (quote the request id)"
            ) from None
        except UploadFailed as exc:
            self.metrics.generations.labels("upload_failed").inc()
            log.error(
                "upload failed; kept on local disk and retried in the background",
                extra={"request_id": request_id, "path": str(path), "destination": destination.uri, "error": str(exc)},
            )
            self.gcs.retry_later(path, destination, request_id)
            raise ApiError(
                503,
                "upload_failed",
                f"the video was generated but could not be uploaded to {destination.uri}; it is kept and "
                "the upload is retried in the background (quote the request id)",
                headers={"Retry-After": "60"},
            ) from None
        timings["upload"] = time.perf_counter() - started
        path.unlink(missing_ok=True)  # Cloud Storage holds it now
        try:
            return await asyncio.to_thread(self.gcs.url, destination)
        except Exception as exc:  # the video is safe in the bucket: do not fail the request over a link
            log.error(
                "could not sign a URL; returning the console URL", extra={"request_id": request_id, "error": str(exc)}
            )
            return self.gcs.console_url(destination)

    async def _await_result(self, task: Task, is_disconnected: Callable[[], Awaitable[bool]]) -> Video:
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(task.future), _DISCONNECT_POLL_SECONDS)
            except TimeoutError:
                pass
            except RunnerError as exc:
                raise _as_api_error(exc) from None
            # Once running, the generation finishes and is stored even if the client left.
            if task.started_at is None and await is_disconnected() and self.runner.withdraw(task):
                self.metrics.rejected.labels("client_disconnected").inc()
                log.info("client left while queued; dropped", extra={"request_id": task.request_id})
                with contextlib.suppress(RunnerError):
                    await task.future
                raise ApiError(499, "client_disconnected", "the client disconnected while queued")


def _as_api_error(exc: RunnerError) -> ApiError:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return ApiError(exc.status, exc.code, str(exc), headers=headers)


async def never_disconnected() -> bool:
    """For work nobody waits on over HTTP (jobs)."""
    return False
