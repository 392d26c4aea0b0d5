"""Builds every component of the server from Settings, and starts and stops them in order. The
only module that knows them all; the HTTP layer gets the container and nothing else."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from models.base import Backend, BackendOptions
from models.latentsync.media import MediaLimits
from models.latentsync.options import LipSyncOptions
from models.ltx.optimize import OptimizeOptions
from models.mp4 import Mp4Options
from models.registry import create_backend, task_of
from serve.config import Settings
from serve.core.keys import KeyStore
from serve.core.prediction import PredictionService
from serve.core.runner import GpuRunner, NullRunner, Runner
from serve.core.tasks import TaskContext, TaskSpec, spec_for
from serve.io.gcs import GcsOutput, storage_client
from serve.io.local_store import LocalStore
from serve.io.secrets import SecretKeyRefresher, make_client
from serve.io.uploads import GcsUploads, LocalUploads, UploadStore
from serve.jobs.dispatch import Dispatch, LocalDispatch, QueuedDispatch
from serve.jobs.model import describe, now
from serve.jobs.records import JobRecords
from serve.jobs.run import JobRun
from serve.jobs.submit import JobSubmitter
from serve.jobs.webhooks import WebhookSender
from serve.jobs.worker import JobWorker, Publisher
from serve.obs.metrics import Metrics

log = logging.getLogger("serve.wiring")


@dataclass(kw_only=True)
class Jobs:
    """The job backend (a local SQLite file, or Pub/Sub + Firestore) and what runs on it."""

    store: JobRecords
    queue: Publisher
    dead_letter: Publisher
    subscriber: Any
    subscription: str
    submitter: JobSubmitter
    webhooks: WebhookSender | None
    worker: JobWorker | None = None


@dataclass(kw_only=True)
class Container:
    """Every component of one server."""

    settings: Settings
    metrics: Metrics
    keys: KeyStore
    key_refresher: SecretKeyRefresher | None
    store: LocalStore
    gcs: GcsOutput | None
    spec: TaskSpec
    runner: Runner
    service: PredictionService
    dispatch: Dispatch
    jobs: Jobs | None
    uploads: UploadStore | None

    async def start(self) -> None:
        """Listeners and threads, in dependency order; the model loads in the background."""
        settings = self.settings
        self.store.prepare()
        if settings.metrics_enabled:
            try:
                self.metrics.serve(settings.metrics_host, settings.metrics_port)
            except OSError as exc:  # e.g. port taken: serve the API anyway, say so loudly
                log.error("metrics listener failed; serving without metrics", extra={"error": str(exc)})
        self.runner.start()  # /health says when the model is ready
        if self.key_refresher is not None:
            self.key_refresher.start()
        if self.jobs is not None and settings.jobs_worker and settings.role == "all":
            self.jobs.worker = self._worker(self.jobs, asyncio.get_running_loop())
            self.jobs.worker.start()

    async def stop(self) -> None:
        """The reverse order of start."""
        if self.jobs is not None:
            if self.jobs.worker is not None:
                self.jobs.worker.stop()
            if self.jobs.webhooks is not None:
                self.jobs.webhooks.close()
        if self.key_refresher is not None:
            self.key_refresher.stop()
        self.runner.stop()
        self.metrics.close()

    def _worker(self, jobs: Jobs, loop: asyncio.AbstractEventLoop) -> JobWorker:
        settings, runner, metrics = self.settings, self.runner, self.metrics

        def is_idle() -> bool:
            return runner.state.is_serving() and runner.in_flight == 0 and not runner.draining

        def on_started(job: dict[str, Any]) -> None:
            if job["attempts"] == 1:
                metrics.job_wait_seconds.observe((now() - job["created_at"]).total_seconds())

        def on_finished(job_id: str) -> None:
            job = jobs.store.get(job_id)
            if job is not None and job.get("webhook_url") and jobs.webhooks is not None:
                jobs.webhooks.send(job["webhook_url"], f"job.{job['status']}", describe(job).model_dump(mode="json"))

        return JobWorker(
            store=jobs.store,
            subscriber=jobs.subscriber,
            subscription=jobs.subscription,
            is_idle=is_idle,
            run_job=JobRun(
                service=self.service,
                metrics=metrics,
                upload_attempts=settings.gcs_upload_retry_attempts,
                upload_delay=settings.gcs_upload_retry_delay_seconds,
            ),
            loop=loop,
            dead_letter=jobs.dead_letter,
            on_started=on_started,
            on_finished=on_finished,
            max_attempts=settings.job_max_attempts,
            lease_seconds=settings.job_lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
        )


def backend_options(settings: Settings) -> BackendOptions:
    return BackendOptions(
        model_path=settings.model_path,
        revision=settings.model_revision,
        device=settings.device,
        dtype=settings.dtype,
        vae_tiling=settings.vae_tiling,
        text_encoder_offload=settings.text_encoder_offload,
        video=Mp4Options(crf=settings.video_crf, preset=settings.video_preset),
        optimize=OptimizeOptions(
            mode=settings.ltx_mode,
            compile=settings.ltx_compile,
            attention_backend=settings.ltx_attention_backend,
            fuse_qkv=settings.ltx_fuse_qkv,
            cache_threshold=settings.ltx_cache_threshold,
            fp8=settings.ltx_fp8,
            cuda_graphs=settings.ltx_cuda_graphs,
            compile_cache_dir=settings.compile_cache_dir,
        ),
        lipsync=LipSyncOptions(
            variant=settings.latentsync_variant,
            deepcache=settings.latentsync_deepcache,
            deepcache_interval=settings.latentsync_deepcache_interval,
            face_grace_frames=settings.latentsync_face_grace_frames,
            face_reuse_frames=settings.latentsync_face_reuse_frames,
            limits=MediaLimits(
                max_seconds=settings.lipsync_max_seconds,
                max_pixels=settings.lipsync_max_pixels,
                scratch_dir=settings.scratch_dir,
                max_scratch_bytes=settings.temp_max_bytes,
            ),
        ),
    )


def _gcs(settings: Settings) -> GcsOutput | None:
    if settings.gcs_output_bucket is None:
        return None
    return GcsOutput(
        client=storage_client(endpoint=settings.gcs_endpoint, project=settings.gcs_project),
        bucket=settings.gcs_output_bucket,
        allowed_buckets={b.strip() for b in settings.gcs_allowed_buckets.split(",") if b.strip()},
        sign_urls=settings.gcs_sign_urls,
        url_lifetime=timedelta(seconds=settings.gcs_url_lifetime_seconds),
        retry_attempts=settings.gcs_upload_retry_attempts,
        retry_delay=settings.gcs_upload_retry_delay_seconds,
        upload_timeout=settings.gcs_upload_timeout_seconds,
    )


def _keys(settings: Settings) -> tuple[KeyStore, SecretKeyRefresher | None]:
    keys = KeyStore.from_settings(
        settings.api_keys,
        settings.api_key_file,
        allow_generate=settings.environment == "local",
        from_secret=settings.api_key_secret is not None,
    )
    refresher = None
    if settings.api_key_secret:
        refresher = SecretKeyRefresher(
            on_keys=keys.replace,
            client=make_client(settings.secret_manager_endpoint),
            secret=settings.api_key_secret,
            interval=settings.api_key_refresh_seconds,
        )
    return keys, refresher


def _uploads(settings: Settings, gcs: GcsOutput | None) -> UploadStore | None:
    """A bucket when UPLOAD_BUCKET is set (every VM reads it); a local folder in local mode; else
    none (a VM's own disk is not where another VM's worker could read an upload)."""
    if settings.upload_bucket:
        client = (
            gcs.client
            if gcs is not None
            else storage_client(endpoint=settings.gcs_endpoint, project=settings.gcs_project)
        )
        return GcsUploads(client, settings.upload_bucket, settings.upload_ttl_seconds)
    if settings.environment == "local":
        return LocalUploads(settings.upload_folder, settings.upload_ttl_seconds)
    return None


def build(settings: Settings, *, backend: Backend | None = None) -> Container:
    """Every component for `settings`; `backend` replaces the registry's (tests use it)."""
    metrics = Metrics()
    keys, refresher = _keys(settings)
    store = LocalStore(settings.output_dir, settings.scratch_dir)
    gcs = _gcs(settings)
    spec = spec_for(backend.task if backend is not None else task_of(settings.model))
    runner: Runner
    if settings.role == "api":  # a gateway: no model here, all work goes through the job queue
        runner = NullRunner(model=settings.model, metrics=metrics)
    else:
        runner = GpuRunner(
            backend=backend or create_backend(settings.model, backend_options(settings)),
            metrics=metrics,
            queue_size=settings.queue_size,
            queue_timeout=settings.queue_timeout_seconds,
            generation_timeout=settings.generation_timeout_seconds,
            warmup=spec.warmup if settings.warmup else None,
        )
    uploads = _uploads(settings, gcs)
    context = TaskContext(
        uploads=uploads,
        settings=settings,
        metrics=metrics,
        downloads=threading.BoundedSemaphore(settings.fetch_max_concurrent),
        gcs=gcs,
        storage_client=(lambda: gcs.client)
        if gcs is not None
        else (lambda: storage_client(endpoint=settings.gcs_endpoint, project=settings.gcs_project)),
    )
    service = PredictionService(spec=spec, context=context, runner=runner, store=store, metrics=metrics)
    jobs = _jobs(settings, service, metrics) if settings.jobs_on else None
    dispatch: Dispatch = LocalDispatch(service)
    if jobs is not None and settings.predict_via_queue:
        dispatch = QueuedDispatch(
            submitter=jobs.submitter,
            store=jobs.store,
            poll_seconds=settings.heartbeat_seconds,
            deadline_seconds=settings.queue_timeout_seconds + settings.generation_timeout_seconds,
        )
    return Container(
        settings=settings,
        metrics=metrics,
        keys=keys,
        key_refresher=refresher,
        store=store,
        gcs=gcs,
        spec=spec,
        runner=runner,
        service=service,
        dispatch=dispatch,
        jobs=jobs,
        uploads=uploads,
    )


def job_backend(settings: Settings) -> tuple[JobRecords, Publisher, Publisher, Any, str]:
    """Store, queue, dead-letter queue, subscriber and subscription of JOBS_BACKEND."""
    if settings.jobs_store == "gcp":
        from serve.jobs.queue import gcp_backend  # the Google clients load only when used

        return gcp_backend(settings)
    from serve.jobs.sqlite import Database, SqliteJobStore, SqliteQueue, SqliteSubscriber

    db = Database(settings.jobs_db_path)
    model = settings.model_alias or settings.model
    store = SqliteJobStore(db, settings.job_ttl_days)
    queue = SqliteQueue(db, settings.pubsub_topic, model)
    dead_letter = SqliteQueue(db, settings.pubsub_dead_letter_topic, model)
    subscriber = SqliteSubscriber(db, model, ack_deadline_seconds=settings.job_lease_seconds)
    return store, queue, dead_letter, subscriber, settings.pubsub_topic


def _jobs(settings: Settings, service: PredictionService, metrics: Metrics) -> Jobs:
    store, queue, dead_letter, subscriber, subscription = job_backend(settings)
    webhooks = None
    if settings.webhook_secret:
        webhooks = WebhookSender(
            settings.webhook_secret,
            allow_private=settings.webhook_allow_private,
            max_attempts=settings.webhook_max_attempts,
        )
    submitter = JobSubmitter(
        store=store,
        queue=queue,
        service=service,
        metrics=metrics,
        webhook_secret=settings.webhook_secret,
        webhook_allow_private=settings.webhook_allow_private,
    )
    return Jobs(
        store=store,
        queue=queue,
        dead_letter=dead_letter,
        subscriber=subscriber,
        subscription=subscription,
        submitter=submitter,
        webhooks=webhooks,
    )
