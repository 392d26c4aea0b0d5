"""The prediction flow, for a request over HTTP and a job alike: check, prepare, queue for the
GPU, store, upload, describe. No HTTP here: a caller that can tell when its client left passes
`is_disconnected`; the result says where the video is and what it cost (GPU seconds, bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from models.base import Video
from serve.core.runner import Runner, Task
from serve.core.tasks import TaskContext, TaskSpec
from serve.errors import ServeError
from serve.io.gcs import Destination, DestinationExists, GcsOutput, UploadFailed
from serve.io.local_store import LocalStore
from serve.obs.metrics import Metrics
from serve.schemas import PredictMetadata, PredictResponse

log = logging.getLogger("serve.core.prediction")
_DISCONNECT_POLL_SECONDS = 0.25

Disconnected = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Prediction:
    """A stored video: the response (its `video_url` is relative, `/videos/<name>`, when the
    video is on this server's disk; the HTTP layer makes it absolute), and what it cost."""

    response: PredictResponse
    gpu_seconds: float
    bytes_out: int


class UploadPending(ServeError):
    """The video was generated and is kept on disk; only its upload failed. Whoever retries
    uploads it again (`PredictionService.finish_upload`); nothing is generated again."""

    def __init__(
        self, message: str, *, video: Video, destination: Destination, body: Any, request_id: str, total: float
    ) -> None:
        super().__init__("upload_failed", message)
        self.video, self.destination, self.body, self.request_id = video, destination, body, request_id
        self.total = total  # seconds from the GPU taking the request to the stored video


class PredictionService:
    """Turns a validated request body into a stored video and its description."""

    def __init__(
        self, *, spec: TaskSpec, context: TaskContext, runner: Runner, store: LocalStore, metrics: Metrics
    ) -> None:
        self.spec, self.context, self.runner, self.store, self.metrics = spec, context, runner, store, metrics

    @property
    def gcs(self) -> GcsOutput | None:
        return self.context.gcs

    async def check(self, body: Any, tenant: str) -> None:
        """What the spec refuses before queueing (it may resolve names: off the event loop)."""
        await asyncio.to_thread(lambda: self.spec.check(body, self.context, tenant=tenant))

    def check_disk(self) -> None:
        """New work needs room for its video (and /health says so too: serve/core/health.py)."""
        floor = self.context.settings.min_free_disk_bytes
        if self.store.low_on_space(floor) is not None:
            raise ServeError("disk_full", f"less than {floor} bytes free on this server's disk; retry on another")

    async def predict(
        self,
        body: Any,
        *,
        tenant: str,
        request_id: str,
        is_disconnected: Disconnected | None = None,
        on_task: Callable[[Task], None] | None = None,
        retry_upload_in_background: bool = True,
    ) -> Prediction:
        """Raises ServeError (its code says what went wrong); UploadPending when only the upload
        failed (retried here in the background unless the caller retries it itself)."""
        # 1. Check against this server's bounds, and where the video will go. The video's name
        #    is the server's own (tagged with its tenant): a client's header never names a file.
        await self.check(body, tenant)
        self.check_disk()
        output = self.store.new_path(tenant)
        requested = self.spec.destination(body)
        destination = self.gcs.destination(output.stem, requested) if self.gcs is not None else None
        # 2. Prepare the backend's request (lip-sync: download the inputs, before queueing).
        prepared = await self.spec.prepare(body, self.context, request_id, tenant=tenant)
        # 3. Queue for the GPU and wait; the backend writes the MP4 through the one writer.
        try:
            loop = asyncio.get_running_loop()
            task = Task(request=prepared.request, request_id=request_id, output=output, future=loop.create_future())
            self.runner.submit(task)
            if on_task is not None:
                on_task(task)
            video = await self._await_result(task, is_disconnected)
        finally:
            prepared.cleanup()
        assert task.started_at is not None
        total = time.monotonic() - task.started_at
        self.metrics.generation_seconds.observe(total)
        self.metrics.observe_stages(video.timings)
        # 4. Upload when Cloud Storage output is configured; a failed upload is kept and retried.
        if destination is not None:
            try:
                return await self._upload(video, destination, body, request_id, total)
            except UploadPending as pending:
                if retry_upload_in_background:
                    self.retry_upload_later(pending)
                raise
        self.metrics.generations.labels("succeeded").inc()
        return self._describe(video, body, request_id, total, destination=None)

    async def finish_upload(self, pending: UploadPending) -> Prediction:
        """Upload a kept video again; raises UploadPending again when that fails too."""
        return await self._upload(pending.video, pending.destination, pending.body, pending.request_id, pending.total)

    def retry_upload_later(self, pending: UploadPending) -> None:
        assert self.gcs is not None
        self.gcs.retry_later(pending.video.path, pending.destination, pending.request_id)

    async def _upload(
        self, video: Video, destination: Destination, body: Any, request_id: str, total: float
    ) -> Prediction:
        assert self.gcs is not None
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.gcs.upload, video.path, destination)
        except DestinationExists as exc:
            log.error("destination exists; video kept on local disk", extra={"request_id": request_id})
            raise ServeError(
                "destination_exists", f"{exc}; the video is kept on the server (quote the request id)"
            ) from None
        except UploadFailed as exc:
            self.metrics.generations.labels("upload_failed").inc()
            log.error(
                "upload failed; the video is kept on local disk",
                extra={"request_id": request_id, "destination": destination.uri, "error": str(exc)},
            )
            raise UploadPending(
                f"the video was generated but could not be uploaded to {destination.uri}; it is kept and "
                "the upload is retried (quote the request id)",
                video=video,
                destination=destination,
                body=body,
                request_id=request_id,
                total=total,
            ) from None
        video.timings["upload"] = time.perf_counter() - started
        video.path.unlink(missing_ok=True)  # Cloud Storage holds it now
        self.metrics.generations.labels("succeeded").inc()
        return self._describe(video, body, request_id, total, destination=destination)

    def _video_url(self, video: Video, destination: Destination | None) -> str:
        if destination is None:
            return f"/videos/{video.path.name}"
        assert self.gcs is not None
        try:
            return self.gcs.url(destination)
        except Exception as exc:  # the video is safe in the bucket: do not fail the request over a link
            log.error("could not sign a URL; returning the console URL", extra={"error": str(exc)})
            return self.gcs.console_url(destination)

    def _describe(
        self, video: Video, body: Any, request_id: str, total: float, *, destination: Destination | None
    ) -> Prediction:
        described = self.runner.describe()
        timings = {k: round(v, 4) for k, v in video.timings.items()}
        video_url = self._video_url(video, destination)
        video_path = destination.uri if destination is not None else str(video.path)
        log.info("video stored", extra={"request_id": request_id, "bytes": video.bytes, "path": video_path})
        response = PredictResponse(
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
                recipe=described.get("recipe"),
                timings=timings,
            ),
        )
        return Prediction(response=response, gpu_seconds=total, bytes_out=video.bytes)

    async def _await_result(self, task: Task, is_disconnected: Disconnected | None) -> Video:
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(task.future), _DISCONNECT_POLL_SECONDS)
            except TimeoutError:
                pass
            # Once running, the generation finishes and is stored even if the client left.
            if (
                is_disconnected is not None
                and task.started_at is None
                and await is_disconnected()
                and self.runner.withdraw(task)
            ):
                self.metrics.rejected.labels("client_disconnected").inc()
                log.info("client left while queued; dropped", extra={"request_id": task.request_id})
                with contextlib.suppress(ServeError):
                    await task.future
                raise ServeError("client_disconnected", "the client disconnected while queued")
