"""Asynchronous jobs: records in Firestore, the queue on Pub/Sub, a worker per GPU server.

A job document moves queued -> running -> succeeded | failed | canceled, each change in a
Firestore transaction, so whatever the number of Pub/Sub deliveries a job starts and ends once.
The worker pulls one message only when its GPU is idle, keeps the message's ack deadline and
the job's lease alive while it runs, and acks after the result is stored. A redelivered message
for a finished job, or for one another worker is running (lease still fresh), is acked without
running it; a job whose worker died (lease expired) is taken over. A generation that crashes is
not acked, so Pub/Sub delivers it again; after JOB_MAX_ATTEMPTS the job is marked failed with
the reason and the worker publishes it to the dead-letter topic and acks. (Pub/Sub's own
dead-letter policy, 5 deliveries at the least, stays as a backstop.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]

from serve.errors import ApiError
from serve.runner import GpuRunner, Task
from serve.schemas import JobResponse
from serve.webhooks import WebhookSender

log = logging.getLogger("serve.jobs")

TERMINAL = {"succeeded", "failed", "canceled"}
MAX_LOG_LINES = 200


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


def now() -> datetime:
    return datetime.now(UTC)


def _line(message: str) -> dict[str, Any]:
    return {"time": now().isoformat(timespec="milliseconds"), "message": message}


class Claim(StrEnum):
    RUN = "run"  # this worker runs it now
    DONE = "done"  # terminal already (or canceled while queued): ack, do nothing
    BUSY = "busy"  # another worker holds a fresh lease: ack, it finishes the job
    MISSING = "missing"  # no such job (e.g. expired): ack


class JobStore:
    """Job documents in one Firestore collection, and per-tenant usage in another."""

    def __init__(self, client: firestore.Client, collection: str, ttl_days: int) -> None:
        self.client = client
        self.jobs = client.collection(collection)
        self.usage = client.collection(f"{collection}_usage")
        self.ttl = timedelta(days=ttl_days)

    def create(
        self, tenant: str, request: dict[str, Any], idempotency_key: str | None, webhook_url: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The new job, or the existing one for the same tenant and idempotency key; and whether
        it was created now."""
        if idempotency_key:
            job_id = hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()[:32]
        else:
            job_id = uuid.uuid4().hex
        created = now()
        doc = {
            "job_id": job_id,
            "tenant": tenant,
            "status": JobStatus.QUEUED.value,
            "request": request,
            "idempotency_key": idempotency_key,
            "webhook_url": webhook_url,
            "created_at": created,
            "updated_at": created,
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "worker": None,
            "lease_expires_at": None,
            "cancel_requested": False,
            "progress": {"step": 0, "total": request.get("num_inference_steps", 0)},
            "result": None,
            "error": None,
            "log": [_line("queued")],
            "expire_at": created + self.ttl,  # a Firestore TTL policy on this field deletes old jobs
        }
        try:
            self.jobs.document(job_id).create(doc)
        except gexc.AlreadyExists:
            existing = self.get(job_id)
            assert existing is not None
            return existing, False
        return doc, True

    def get(self, job_id: str) -> dict[str, Any] | None:
        snapshot = self.jobs.document(job_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def position(self, job: dict[str, Any]) -> int:
        """1 + the number of queued jobs created before this one (all tenants share the GPUs)."""
        query = self.jobs.where(filter=firestore.FieldFilter("status", "==", "queued")).where(
            filter=firestore.FieldFilter("created_at", "<", job["created_at"])
        )
        result = query.count().get()
        return int(result[0][0].value) + 1

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> tuple[Claim, dict[str, Any] | None]:
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> tuple[Claim, dict[str, Any] | None]:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return Claim.MISSING, None
            job = snapshot.to_dict()
            if job["status"] in TERMINAL:
                return Claim.DONE, job
            lease = job.get("lease_expires_at")
            if job["status"] == JobStatus.RUNNING and lease is not None and lease > now():
                return Claim.BUSY, job
            if job["cancel_requested"]:
                transaction.update(ref, self._terminal(JobStatus.CANCELED, "canceled before it ran"))
                return Claim.DONE, job
            taken_over = job["status"] == JobStatus.RUNNING
            changes = {
                "status": JobStatus.RUNNING.value,
                "worker": worker,
                "attempts": job["attempts"] + 1,
                "started_at": job["started_at"] or now(),
                "updated_at": now(),
                "lease_expires_at": now() + timedelta(seconds=lease_seconds),
                "log": firestore.ArrayUnion(
                    [_line(f"attempt {job['attempts'] + 1} on {worker}" + (" (took over)" if taken_over else ""))]
                ),
            }
            transaction.update(ref, changes)
            job.update(changes, log=None)
            return Claim.RUN, job

        return attempt(self.client.transaction())

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float, step: int, total: int) -> bool:
        """Extend the lease and record progress; True when a cancel was requested."""
        ref = self.jobs.document(job_id)
        ref.update(
            {
                "lease_expires_at": now() + timedelta(seconds=lease_seconds),
                "progress": {"step": step, "total": total},
                "updated_at": now(),
            }
        )
        snapshot = ref.get(["cancel_requested"])
        return bool(snapshot.get("cancel_requested"))

    def finish(
        self,
        job_id: str,
        worker: str,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
        gpu_seconds: float = 0.0,
        bytes_out: int = 0,
    ) -> bool:
        """running -> terminal, once; False when the job was already terminal or another worker
        holds it. Usage is counted in the same transaction."""
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> bool:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return False
            job = snapshot.to_dict()
            if job["status"] in TERMINAL or job.get("worker") != worker:
                return False
            message = f"{status.value}" + (f": {error['code']}: {error['message']}" if error else "")
            changes = self._terminal(status, message)
            changes.update(
                result=result, error=error, lease_expires_at=None, gpu_seconds=gpu_seconds, bytes_out=bytes_out
            )
            transaction.update(ref, changes)
            transaction.set(
                self.usage.document(job["tenant"]),
                {
                    "tenant": job["tenant"],
                    "jobs": firestore.Increment(1),
                    f"jobs_{status.value}": firestore.Increment(1),
                    "gpu_seconds": firestore.Increment(gpu_seconds),
                    "bytes_out": firestore.Increment(bytes_out),
                },
                merge=True,
            )
            return True

        return bool(attempt(self.client.transaction()))

    def fail_queued(self, job_id: str, error: dict[str, str]) -> None:
        """A job that never ran (e.g. it could not be queued): failed, unless already terminal."""
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> None:
            snapshot = ref.get(transaction=transaction)
            if snapshot.exists and snapshot.get("status") not in TERMINAL:
                changes = self._terminal(JobStatus.FAILED, f"failed: {error['code']}: {error['message']}")
                changes["error"] = error
                transaction.update(ref, changes)

        attempt(self.client.transaction())

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Queued: canceled now. Running: the worker stops it at its next step."""
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> dict[str, Any] | None:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return None
            job = snapshot.to_dict()
            if job["status"] == JobStatus.QUEUED:
                changes = self._terminal(JobStatus.CANCELED, "canceled while queued")
                changes["cancel_requested"] = True
            elif job["status"] == JobStatus.RUNNING:
                changes = {
                    "cancel_requested": True,
                    "updated_at": now(),
                    "log": firestore.ArrayUnion([_line("cancel requested")]),
                }
            else:
                return job
            transaction.update(ref, changes)
            job.update(changes)
            return job

        return attempt(self.client.transaction())

    def release(self, job_id: str) -> None:
        """Give a running job's lease up at once, so its redelivery need not wait for it to expire."""
        self.jobs.document(job_id).update({"lease_expires_at": now() - timedelta(seconds=1)})

    def append_log(self, job_id: str, message: str) -> None:
        self.jobs.document(job_id).update({"log": firestore.ArrayUnion([_line(message)]), "updated_at": now()})

    def usage_of(self, tenant: str) -> dict[str, Any]:
        snapshot = self.usage.document(tenant).get()
        return snapshot.to_dict() if snapshot.exists else {"tenant": tenant, "jobs": 0}

    @staticmethod
    def _terminal(status: JobStatus, message: str) -> dict[str, Any]:
        return {
            "status": status.value,
            "finished_at": now(),
            "updated_at": now(),
            "log": firestore.ArrayUnion([_line(message)]),
        }


class JobQueue:
    """Publishes job ids to the topic the workers' subscription reads."""

    def __init__(self, publisher: pubsub_v1.PublisherClient, topic: str) -> None:
        self.publisher = publisher
        self.topic = topic

    def publish(self, job_id: str) -> None:
        self.publisher.publish(self.topic, job_id.encode(), job_id=job_id).result(timeout=30)


@dataclass
class Outcome:
    """What running a job gave: a stored result, or an error that is final or worth a retry."""

    status: JobStatus
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    retry: bool = False
    gpu_seconds: float = 0.0
    bytes_out: int = 0


JobRunner = Callable[[dict[str, Any], Callable[[Task], None]], Coroutine[Any, Any, Outcome]]


class JobWorker:
    """Pulls one message at a time, only while the GPU is idle, and runs it on the event loop."""

    def __init__(
        self,
        *,
        store: JobStore,
        subscriber: pubsub_v1.SubscriberClient,
        subscription: str,
        runner: GpuRunner,
        run_job: JobRunner,
        loop: asyncio.AbstractEventLoop,
        dead_letter: JobQueue,
        on_finished: Callable[[str], None] = lambda job_id: None,
        on_started: Callable[[dict[str, Any]], None] = lambda job: None,
        max_attempts: int,
        lease_seconds: float = 60,
        heartbeat_seconds: float = 5,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.subscriber = subscriber
        self.subscription = subscription
        self.runner = runner
        self.run_job = run_job
        self.loop = loop
        self.dead_letter = dead_letter
        self.on_finished = on_finished
        self.on_started = on_started
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="job-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _idle(self) -> bool:
        return self.runner.state.is_serving() and self.runner.in_flight == 0 and not self.runner.draining

    def _main(self) -> None:
        while not self._stop.is_set():
            if not self._idle():
                self._stop.wait(0.2)
                continue
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": 1}, timeout=2
                )
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                continue
            except Exception as exc:  # keep the worker alive through transient errors
                log.error("pull failed", extra={"error": str(exc)})
                self._stop.wait(2)
                continue
            for received in response.received_messages:
                try:
                    self._handle(received)
                except Exception as exc:  # e.g. Firestore unreachable: Pub/Sub delivers it again
                    log.error("job handling failed; message released", exc_info=exc)
                    with contextlib.suppress(Exception):
                        self._nack(received.ack_id)

    def _ack(self, ack_id: str) -> None:
        self.subscriber.acknowledge(request={"subscription": self.subscription, "ack_ids": [ack_id]})

    def _nack(self, ack_id: str) -> None:
        self.subscriber.modify_ack_deadline(
            request={"subscription": self.subscription, "ack_ids": [ack_id], "ack_deadline_seconds": 0}
        )

    def _handle(self, received: Any) -> None:
        job_id = received.message.data.decode()
        claim, job = self.store.claim(job_id, self.name, self.lease_seconds)
        if claim is not Claim.RUN:
            log.info("job message acked without running", extra={"job_id": job_id, "claim": claim.value})
            self._ack(received.ack_id)
            return
        assert job is not None
        attempt = job["attempts"]
        if attempt > self.max_attempts:  # its workers died every time: do not try again
            error = {"code": "worker_lost", "message": f"no worker finished it in {self.max_attempts} attempts"}
            self._give_up(received.ack_id, job_id, error)
            return
        log.info("job started", extra={"job_id": job_id, "attempt": attempt, "worker": self.name})
        self.on_started(job)
        holder: dict[str, Task] = {}
        done = threading.Event()
        keeper = threading.Thread(
            target=self._keep_alive, args=(received.ack_id, job_id, holder, done), name="job-lease", daemon=True
        )
        keeper.start()
        try:
            future = asyncio.run_coroutine_threadsafe(
                self.run_job(job, lambda task: holder.update(task=task)), self.loop
            )
            outcome = future.result()
        except Exception as exc:  # the generation crashed: let Pub/Sub deliver it again
            outcome = Outcome(
                JobStatus.FAILED, error={"code": "crashed", "message": f"{type(exc).__name__}: {exc}"}, retry=True
            )
        finally:
            done.set()
            keeper.join()
        if outcome.retry and attempt < self.max_attempts:
            self.store.append_log(job_id, f"attempt {attempt} failed ({outcome.error}); will be retried")
            self.store.release(job_id)
            self._nack(received.ack_id)
            return
        if outcome.retry:  # the last attempt failed too
            assert outcome.error is not None
            error = {"code": outcome.error["code"], "message": f"{outcome.error['message']} (after {attempt} attempts)"}
            self._give_up(received.ack_id, job_id, error)
            return
        final = self.store.finish(
            job_id,
            self.name,
            outcome.status,
            result=outcome.result,
            error=outcome.error,
            gpu_seconds=outcome.gpu_seconds,
            bytes_out=outcome.bytes_out,
        )
        log.info("job finished", extra={"job_id": job_id, "status": outcome.status.value, "recorded": final})
        self._ack(received.ack_id)
        if final:
            self.on_finished(job_id)

    def _give_up(self, ack_id: str, job_id: str, error: dict[str, str]) -> None:
        """Failed for good: recorded with the reason, published to the dead-letter topic, acked."""
        self.store.finish(job_id, self.name, JobStatus.FAILED, error=error)
        self.dead_letter.publish(job_id)
        log.error("job dead-lettered", extra={"job_id": job_id, "code": error["code"], "reason": error["message"]})
        self._ack(ack_id)
        self.on_finished(job_id)

    def _keep_alive(self, ack_id: str, job_id: str, holder: dict[str, Task], done: threading.Event) -> None:
        """Extend the message's deadline and the job's lease; pass a cancel request to the task."""
        while not done.wait(self.heartbeat_seconds):
            task = holder.get("task")
            try:
                self.subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": [ack_id],
                        "ack_deadline_seconds": int(self.lease_seconds),
                    }
                )
                canceled = self.store.heartbeat(
                    job_id, self.name, self.lease_seconds, task.step if task else 0, task.total if task else 0
                )
            except Exception as exc:  # a missed heartbeat is not fatal; the lease has slack
                log.warning("heartbeat failed", extra={"job_id": job_id, "error": str(exc)})
                continue
            if canceled and task is not None and not task.cancel.is_set():
                log.info("cancel requested; stopping at the next step", extra={"job_id": job_id})
                task.cancel.set()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def describe(job: dict[str, Any], position: int | None = None) -> JobResponse:
    job_id = job["job_id"]
    progress = job.get("progress") or {"step": 0, "total": 0}
    total = max(int(progress.get("total") or 0), 0)
    step = int(progress.get("step") or 0)
    if job["status"] == "succeeded":
        step = total
    return JobResponse(
        job_id=job_id,
        status=job["status"],
        created_at=_iso(job["created_at"]) or "",
        updated_at=_iso(job["updated_at"]) or "",
        started_at=_iso(job.get("started_at")),
        finished_at=_iso(job.get("finished_at")),
        attempts=job.get("attempts", 0),
        progress={"step": step, "total": total, "fraction": round(step / total, 4) if total else 0.0},
        queue_position=position,
        result=job.get("result"),
        error=job.get("error"),
        links={
            "self": f"/jobs/{job_id}",
            "log": f"/jobs/{job_id}/log",
            "cancel": f"/jobs/{job_id}/cancel",
            "result": f"/result/{job_id}",
        },
    )


def api_error_outcome(exc: ApiError) -> Outcome:
    """Final for a refused request; retried (then dead-lettered) for a busy server, a GPU out of
    memory or a generation that crashed."""
    retry = exc.status in (429, 503) or exc.code == "generation_failed"
    return Outcome(JobStatus.FAILED, error={"code": exc.code, "message": exc.message}, retry=retry)


# -- wiring -----------------------------------------------------------------------------------


def jobs_project(settings: Any) -> str:
    project: str | None = settings.jobs_project or settings.gcp_project
    if not project:
        raise RuntimeError("JOBS_ENABLED needs JOBS_PROJECT or GCP_PROJECT")
    return project


def jobs_from_settings(settings: Any) -> tuple[JobStore, JobQueue, pubsub_v1.SubscriberClient]:
    """Clients for the job store and queue; emulators are picked up from FIRESTORE_EMULATOR_HOST
    and PUBSUB_EMULATOR_HOST by the client libraries themselves."""
    project = jobs_project(settings)
    client = firestore.Client(project=project, database=settings.firestore_database)
    store = JobStore(client, settings.jobs_collection, settings.job_ttl_days)
    publisher = pubsub_v1.PublisherClient()
    queue = JobQueue(publisher, publisher.topic_path(project, settings.pubsub_topic))
    return store, queue, pubsub_v1.SubscriberClient()


def start_worker(app: Any, settings: Any, jobs: tuple[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> JobWorker:
    """The worker loop of this server, running jobs through the same path as /predict."""
    from serve.schemas import LipSyncPredictRequest, PredictRequest
    from serve.service import never_disconnected

    store, _queue, subscriber = jobs
    project = jobs_project(settings)
    service = app.state.service
    base_url = settings.public_url or f"http://{settings.host}:{settings.port}/"

    async def run_job(job: dict[str, Any], on_task: Callable[[Task], None]) -> Outcome:
        body: PredictRequest | LipSyncPredictRequest
        if app.state.lipsync:
            body = LipSyncPredictRequest.model_validate(job["request"])
        else:
            body = PredictRequest.model_validate(job["request"])
        state: dict[str, Any] = {}
        try:
            response = await service.predict(
                body,
                request_id=job["job_id"],
                base_url=base_url,
                is_disconnected=never_disconnected,
                state=state,
                on_task=on_task,
            )
        except ApiError as exc:
            if exc.code == "canceled":
                outcome = Outcome(JobStatus.CANCELED, error={"code": "canceled", "message": exc.message})
            else:
                outcome = api_error_outcome(exc)
            app.state.metrics.jobs.labels(outcome.status.value if not outcome.retry else "retried").inc()
            return outcome
        app.state.metrics.jobs.labels("succeeded").inc()
        return Outcome(
            JobStatus.SUCCEEDED,
            result=response.model_dump(mode="json"),
            gpu_seconds=float(state.get("gpu_seconds", 0.0)),
            bytes_out=int(state.get("bytes", 0)),
        )

    publisher = _queue.publisher
    dead_letter = JobQueue(publisher, publisher.topic_path(project, settings.pubsub_dead_letter_topic))
    sender: WebhookSender | None = app.state.webhooks

    def on_finished(job_id: str) -> None:
        job = store.get(job_id)
        if job is not None and job.get("webhook_url") and sender is not None:
            sender.send(job["webhook_url"], f"job.{job['status']}", describe(job).model_dump(mode="json"))

    def on_started(job: dict[str, Any]) -> None:
        if job["attempts"] == 1:
            app.state.metrics.job_wait_seconds.observe((now() - job["created_at"]).total_seconds())

    worker = JobWorker(
        dead_letter=dead_letter,
        on_finished=on_finished,
        on_started=on_started,
        store=store,
        subscriber=subscriber,
        subscription=subscriber.subscription_path(project, settings.pubsub_subscription),
        runner=app.state.runner,
        run_job=run_job,
        loop=loop,
        max_attempts=settings.job_max_attempts,
        lease_seconds=settings.job_lease_seconds,
        heartbeat_seconds=settings.job_heartbeat_seconds,
    )
    worker.start()
    return worker
