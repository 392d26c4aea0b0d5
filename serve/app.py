"""Builds the FastAPI app; the model loads in the lifespan, on the runner's thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from models.base import Backend, BackendOptions, GenerationRequest, LipSyncRequest
from models.latentsync.backend import LipSyncOptions
from models.latentsync.media import MediaLimits
from models.ltx_optimize import OptimizeOptions
from models.registry import create_backend
from serve.auth import KeyStore
from serve.config import Settings
from serve.errors import install_error_handlers
from serve.gcs import GcsOutput
from serve.job_routes import add_job_routes
from serve.job_routes import router as job_router
from serve.jobs import jobs_from_settings, start_worker
from serve.limits import publish_limits
from serve.metrics import Metrics
from serve.middleware import RequestContextMiddleware
from serve.routes import add_predict_route, router
from serve.runner import GpuRunner
from serve.schemas import Lifecycle
from serve.secrets import SecretKeyRefresher, make_client
from serve.service import PredictionService
from serve.storage import LocalStore
from serve.webhooks import WebhookSender

log = logging.getLogger("serve.app")

# Small enough to take seconds, large enough to run every layer of the model once.
WARMUP_REQUEST = GenerationRequest(prompt="warm-up", height=64, width=64, num_frames=9, num_inference_steps=2)
# Lip-sync: every model once on synthetic input (see LatentSyncBackend._warmup).
LIPSYNC_WARMUP = LipSyncRequest(video_path=Path(), audio_path=Path(), output_path=Path(), warmup=True)


def is_lipsync(backend: Backend) -> bool:
    return getattr(backend, "task", "text-to-video") == "lip-sync"


def backend_from_settings(settings: Settings) -> Backend:
    options = BackendOptions(
        model_path=settings.model_path,
        revision=settings.model_revision,
        device=settings.device,
        dtype=settings.dtype,
        vae_tiling=settings.vae_tiling,
        text_encoder_offload=settings.text_encoder_offload,
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
            limits=MediaLimits(max_seconds=settings.lipsync_max_seconds, max_pixels=settings.lipsync_max_pixels),
        ),
    )
    return create_backend(settings.model, options)


def storage_client(settings: Settings) -> Any:
    """A Cloud Storage client: the server's credentials, or anonymous against an emulator."""
    from google.cloud import storage

    if settings.gcs_endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=settings.gcs_project or "emulator",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": settings.gcs_endpoint},
        )
    return storage.Client(project=settings.gcs_project)


def gcs_from_settings(settings: Settings) -> GcsOutput | None:
    """The Cloud Storage output, when GCS_OUTPUT_BUCKET is set."""
    if settings.gcs_output_bucket is None:
        return None

    client = storage_client(settings)
    return GcsOutput(
        client=client,
        bucket=settings.gcs_output_bucket,
        allowed_buckets={b.strip() for b in settings.gcs_allowed_buckets.split(",") if b.strip()},
        sign_urls=settings.gcs_sign_urls,
        url_lifetime=timedelta(seconds=settings.gcs_url_lifetime_seconds),
        retry_attempts=settings.gcs_upload_retry_attempts,
        retry_delay=settings.gcs_upload_retry_delay_seconds,
        upload_timeout=settings.gcs_upload_timeout_seconds,
    )


def create_app(settings: Settings, *, backend: Backend | None = None) -> FastAPI:
    """The app for `settings`; `backend` replaces the registry's (tests use it)."""
    metrics = Metrics()
    keys = KeyStore.from_settings(
        settings.api_keys,
        settings.api_key_file,
        allow_generate=settings.environment == "local",
        from_secret=settings.api_key_secret is not None,
    )
    refresher = None
    if settings.api_key_secret:
        refresher = SecretKeyRefresher(
            store=keys,
            client=make_client(settings.secret_manager_endpoint),
            secret=settings.api_key_secret,
            interval=settings.api_key_refresh_seconds,
        )
    store = LocalStore(settings.output_dir)
    jobs = jobs_from_settings(settings) if settings.jobs_enabled else None
    webhooks = None
    if jobs is not None and settings.webhook_secret:
        webhooks = WebhookSender(
            settings.webhook_secret,
            allow_private=settings.webhook_allow_private,
            max_attempts=settings.webhook_max_attempts,
        )
    backend = backend or backend_from_settings(settings)
    lipsync = is_lipsync(backend)
    runner = GpuRunner(
        backend=backend,
        metrics=metrics,
        queue_size=settings.queue_size,
        queue_timeout=settings.queue_timeout_seconds,
        generation_timeout=settings.generation_timeout_seconds,
        warmup=(LIPSYNC_WARMUP if lipsync else WARMUP_REQUEST) if settings.warmup else None,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.prepare()
        if settings.metrics_enabled:
            try:
                metrics.serve(settings.metrics_host, settings.metrics_port)
            except OSError as exc:  # e.g. port taken: serve the API anyway, say so loudly
                log.error("metrics listener failed; serving without metrics", extra={"error": str(exc)})
        if settings.role == "all":
            runner.start()  # loads the model in the background; /health says when it is ready
        else:  # a gateway: no model here, all work goes through the job queue
            runner.state, runner.reason = Lifecycle.READY, None
            metrics.ready.set(1)
        if refresher is not None:
            refresher.start()
        worker = None
        if jobs is not None and settings.jobs_worker and settings.role == "all":
            worker = start_worker(app, settings, jobs, asyncio.get_running_loop())
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            if webhooks is not None:
                webhooks.close()
            if refresher is not None:
                refresher.stop()
            runner.stop()
            metrics.close()

    app = FastAPI(
        title="videogen-serve",
        version="0.1.0",
        summary="Text-to-video (LTX-Video) behind X-API-Key POST /predict",
        lifespan=lifespan,
    )
    app.state.settings, app.state.keys, app.state.store = settings, keys, store
    app.state.lipsync = lipsync
    app.state.runner, app.state.metrics, app.state.key_refresher = runner, metrics, refresher
    gcs = gcs_from_settings(settings)
    app.state.service = PredictionService(
        settings=settings,
        runner=runner,
        store=store,
        metrics=metrics,
        gcs=gcs,
        storage_client=(lambda: gcs.client) if gcs is not None else (lambda: storage_client(settings)),
    )
    install_error_handlers(app)
    app.include_router(router)
    add_predict_route(app, lipsync=lipsync)
    app.state.webhooks = webhooks
    if jobs is not None:
        app.state.jobs, app.state.job_queue, app.state.subscriber = jobs
        app.include_router(job_router)
        add_job_routes(app, lipsync=lipsync)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes, project=settings.gcp_project
    )

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            publish_limits(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
