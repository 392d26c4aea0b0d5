"""The one enqueue path, for POST /jobs, POST /process and a queued /predict: check the body,
record the job, publish it (only when new). A failed publish fails the job and answers 503."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from serve.core.prediction import PredictionService
from serve.errors import ServeError, invalid_field
from serve.jobs.webhooks import UnsafeUrl, check_url
from serve.obs.metrics import Metrics

log = logging.getLogger("serve.jobs.submit")


class Store(Protocol):
    def create(
        self, tenant: str, request: dict[str, Any], idempotency_key: str | None, webhook_url: str | None = None
    ) -> tuple[dict[str, Any], bool]: ...
    def fail_queued(self, job_id: str, error: dict[str, str]) -> None: ...


class Queue(Protocol):
    def publish(self, job_id: str) -> None: ...


class JobSubmitter:
    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        service: PredictionService,
        metrics: Metrics,
        webhook_secret: str | None,
        webhook_allow_private: bool,
    ) -> None:
        self.store, self.queue, self.service, self.metrics = store, queue, service, metrics
        self.webhook_secret, self.webhook_allow_private = webhook_secret, webhook_allow_private

    def _check_webhook(self, url: str) -> None:
        if not self.webhook_secret:
            raise invalid_field("webhook_url", "webhooks are not configured on this server (WEBHOOK_SECRET)")
        try:
            check_url(url, allow_private=self.webhook_allow_private)
        except UnsafeUrl as exc:
            raise invalid_field("webhook_url", str(exc)) from None

    async def submit(
        self,
        body: Any,
        *,
        tenant: str,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """(the job, whether it was created now); ServeError for a refused body or a failed publish."""
        await self.service.check(body, tenant)  # what a worker would refuse is refused now, before queueing
        if webhook_url is not None:
            await asyncio.to_thread(self._check_webhook, webhook_url)
        payload = body.model_dump(mode="json", include=self.service.spec.predict_body.model_fields.keys())
        job, created = await asyncio.to_thread(self.store.create, tenant, payload, idempotency_key, webhook_url)
        if created:
            try:
                await asyncio.to_thread(self.queue.publish, job["job_id"])
            except Exception as exc:
                error = ServeError("queue_unavailable", "the job could not be queued; submit it again")
                await asyncio.to_thread(self.store.fail_queued, job["job_id"], error.to_dict())
                log.error("publish failed", extra={"job_id": job["job_id"], "error": str(exc)})
                raise error from None
            self.metrics.jobs.labels("submitted").inc()
        log.info("job submitted", extra={"job_id": job["job_id"], "tenant": tenant, "new_job": created})
        return job, created
